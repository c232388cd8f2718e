//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/test/e2e/stacktest"
)

// The agent against the stack's secured Elasticsearch node (HTTPS with the
// stack's CA, a file-realm user, a service account token; see
// stacktest/secure.go). The node is started on the first test that needs
// it, about 20 s, and reused by the others and by later runs. The tests are
// parallel to one another (each has its own topic, group, index and data
// directory), so they run together once the sequential tests are done: the
// start of the node and their waits overlap, and nothing else runs beside
// them to be measured.

var (
	secureOnce  sync.Once
	secureStack *stacktest.Stack
	secureErr   error
)

// secureES returns the stack's secured node, seen as its superuser,
// starting it if it does not run. It fails the test, never skips it, when
// the node cannot start.
func secureES(t *testing.T) (esNode, *stacktest.Stack) {
	t.Helper()
	secureOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		secureStack, secureErr = stacktest.UpSecure(ctx, os.Stderr)
	})
	if secureErr != nil {
		t.Fatalf("cannot start the stack's secured Elasticsearch node (it needs what the stack needs: Java 17+ and Maven, "+
			"see test/e2e/README.md): %v", secureErr)
	}
	c, err := secureStack.SecureClient()
	if err != nil {
		t.Fatal(err)
	}
	s := secureStack
	return esNode{url: s.ESSecureURL, client: c, auth: func(r *http.Request) { r.SetBasicAuth(s.ESSecureUser, s.ESSecurePassword) }}, s
}

// esTLSBlock is an elasticsearch.tls block; empty files are left out.
func esTLSBlock(caFile, certFile, keyFile string) string {
	var b strings.Builder
	b.WriteString("tls {\n")
	for _, kv := range [][2]string{{"ca_file", caFile}, {"cert_file", certFile}, {"key_file", keyFile}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "    %s = %q\n", kv[0], kv[1])
		}
	}
	b.WriteString("  }")
	return b.String()
}

// waitIndexedOn waits until node es holds n documents in index.
func waitIndexedOn(t *testing.T, a *agentProc, es esNode, index string, n int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d documents indexed", n), func() (bool, string) {
		a.requireRunning("while delivering")
		got := esCountOn(t, es, index)
		return got >= n, fmt.Sprintf("%d of %d indexed", got, n)
	})
}

// TestESSecureBasicAuth: over HTTPS, trusting the stack's CA and
// presenting its client certificate, with basic authentication (the
// password from the environment): every record is indexed exactly once,
// and the password is in no log line, configuration file or status.
func TestESSecureBasicAuth(t *testing.T) {
	t.Parallel()
	const (
		partitions = 2
		n          = 2_000
	)
	es, s := secureES(t)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: s.ESSecureURL,
		ESExtra: fmt.Sprintf("username = %q\n  password = env(\"ES_TEST_PASSWORD\")\n  %s",
			s.ESSecureUser, esTLSBlock(s.ESSecureCA, s.ESSecureClientCert, s.ESSecureClientKey)),
		Env: []string{"ES_TEST_PASSWORD=" + s.ESSecurePassword}}
	a := startAgent(t, o)
	waitIndexedOn(t, a, es, o.Index, n, time.Minute)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	requireHealthy(t, a)
	requireNotInStatus(t, a, s.ESSecurePassword)
	a.stop(30 * time.Second)
	assertExactlyOnceOn(t, es, o.Index, topic, partitions, n)
	requireNotLogged(t, a, s.ESSecurePassword)
	if line := a.lastLogLine("elasticsearch cluster"); !strings.Contains(line, "shipper-stack-secure") {
		t.Errorf("the start-up check did not log the secured cluster; got %q", line)
	}
}

// TestESSecureBearerToken: with a bearer token from a file (a service
// account token of elastic/fleet-server, which may write logs-* indices),
// every record is indexed exactly once; the token is never logged.
func TestESSecureBearerToken(t *testing.T) {
	t.Parallel()
	const (
		partitions = 2
		n          = 1_000
	)
	es, s := secureES(t)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte(s.ESSecureBearerToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := agentOpts{Topic: topic, Group: topic, Index: "logs-" + topic, DataDir: dir, ESURL: s.ESSecureURL,
		ESExtra: fmt.Sprintf("bearer_token_file = %q\n  %s", token, esTLSBlock(s.ESSecureCA, "", ""))}
	a := startAgent(t, o)
	waitIndexedOn(t, a, es, o.Index, n, time.Minute)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	requireHealthy(t, a)
	requireNotInStatus(t, a, s.ESSecureBearerToken)
	a.stop(30 * time.Second)
	assertExactlyOnceOn(t, es, o.Index, topic, partitions, n)
	requireNotLogged(t, a, s.ESSecureBearerToken)
}

// TestESSecurePasswordFileRotated: the password comes from a file laid out
// as Kubernetes mounts a secret (password -> ..data/password, ..data -> a
// versioned directory). It starts wrong: delivery is held on the node's
// 401 (health 503, held), nothing is indexed, dead-lettered or committed.
// The secret is then updated as Kubernetes does, by swapping ..data: with
// no restart and no flush, delivery resumes and every record is indexed
// exactly once. Neither password is ever logged.
func TestESSecurePasswordFileRotated(t *testing.T) {
	t.Parallel()
	const (
		partitions = 2
		n          = 1_000
		wrong      = "wrong-es-password-SECRET789"
	)
	es, s := secureES(t)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	secrets := t.TempDir()
	version := func(name, password string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(secrets, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(secrets, name, "password"), []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(secrets, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(secrets, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", wrong)
	file := filepath.Join(secrets, "password")
	if err := os.Symlink(filepath.Join("..data", "password"), file); err != nil {
		t.Fatal(err)
	}
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: s.ESSecureURL,
		ESExtra: fmt.Sprintf("username = %q\n  password_file = %q\n  %s", s.ESSecureUser, file, esTLSBlock(s.ESSecureCA, "", ""))}
	a := startAgent(t, o)
	waitFor(t, 30*time.Second, "delivery held on 401", func() (bool, string) {
		a.requireRunning("while its password was wrong")
		code, held, reason, body := heldHealth(a)
		return code == http.StatusServiceUnavailable && held && strings.Contains(reason, "401"), fmt.Sprintf("%d %s", code, body)
	})
	st := a.stats()
	if got := esCountOn(t, es, o.Index); got != 0 || st.Output.DeadLettered != 0 {
		t.Fatalf("with the wrong password: %d indexed, %d dead-lettered", got, st.Output.DeadLettered)
	}
	for p, off := range committedOffsets(t, o.Group, topic, partitions) {
		if off > 0 {
			t.Errorf("partition %d: committed offset %d while nothing was delivered", p, off)
		}
	}

	rotated := time.Now()
	version("..v2", s.ESSecurePassword)
	waitIndexedOn(t, a, es, o.Index, n, 30*time.Second)
	t.Logf("delivered %s after the secret was rotated", time.Since(rotated).Round(100*time.Millisecond))
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	requireHealthy(t, a)
	if line := a.lastLogLine("credential file changed"); !strings.Contains(line, "elasticsearch.password_file") {
		t.Errorf("the rotation was not logged; got %q", line)
	}
	a.stop(30 * time.Second)
	assertExactlyOnceOn(t, es, o.Index, topic, partitions, n)
	requireNotLogged(t, a, wrong)
	requireNotLogged(t, a, s.ESSecurePassword)
}

// TestESSecureWrongCA: with a ca_file of another CA (the broker's) the
// node's certificate is refused: the log says at error level that it is
// not trusted and names elasticsearch.tls.ca_file, health answers 503
// output_failing, and nothing is indexed or committed while the agent
// keeps running. Restarted on the same data directory with the stack's CA,
// it indexes every record exactly once: nothing was lost.
func TestESSecureWrongCA(t *testing.T) {
	t.Parallel()
	const (
		partitions = 2
		n          = 1_000
	)
	es, s := secureES(t)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	auth := fmt.Sprintf("username = %q\n  password = env(\"ES_TEST_PASSWORD\")\n  ", s.ESSecureUser)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(), ESURL: s.ESSecureURL,
		ESExtra: auth + esTLSBlock(stack.KafkaTLSCA, "", ""), TopExtra: `shutdown_timeout = "5s"`,
		Env: []string{"ES_TEST_PASSWORD=" + s.ESSecurePassword}}
	a := startAgent(t, o)
	waitFor(t, 30*time.Second, "health says the node's certificate is not trusted", func() (bool, string) {
		a.requireRunning("while the node's certificate was not trusted")
		code, status, reason, body := inputHealth(a)
		return code == http.StatusServiceUnavailable && status == "output_failing" &&
				strings.Contains(reason, "not trusted") && strings.Contains(reason, "elasticsearch.tls.ca_file"),
			fmt.Sprintf("%d %s", code, body)
	})
	// The error line, not the warnings that follow it (the node marked
	// dead, the bulk request re-sent) and say the same in passing.
	line := a.lastLogLine(`"level":"ERROR","msg":"elasticsearch TLS: the node's certificate is not trusted`)
	if !strings.Contains(line, "elasticsearch.tls.ca_file") {
		t.Errorf("no error line saying the certificate is not trusted and naming elasticsearch.tls.ca_file; got %q", line)
	}
	t.Logf("log: %s", line)
	time.Sleep(2 * time.Second)
	a.requireRunning("while the node's certificate was not trusted")
	if got := esCountOn(t, es, o.Index); got != 0 {
		t.Errorf("%d documents indexed without a trusted certificate", got)
	}
	for p, off := range committedOffsets(t, o.Group, topic, partitions) {
		if off > 0 {
			t.Errorf("partition %d: committed offset %d while nothing was delivered", p, off)
		}
	}
	a.stop(30 * time.Second)

	o.ESExtra = auth + esTLSBlock(s.ESSecureCA, "", "")
	b := startAgent(t, o)
	waitIndexedOn(t, b, es, o.Index, n, time.Minute)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	requireHealthy(t, b)
	b.stop(30 * time.Second)
	assertExactlyOnceOn(t, es, o.Index, topic, partitions, n)
	requireNotLogged(t, b, s.ESSecurePassword)
}
