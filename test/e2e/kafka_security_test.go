//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// saslBlock is a kafka.sasl block that reads the password from the
// agent's environment variable KAFKA_TEST_PASSWORD, so the configuration
// file never holds it.
func saslBlock(mechanism, user string) string {
	return fmt.Sprintf("sasl {\n    mechanism = %q\n    username  = %q\n    password  = env(\"KAFKA_TEST_PASSWORD\")\n  }",
		mechanism, user)
}

// tlsBlock is a kafka.tls block; empty files are left out.
func tlsBlock(caFile, certFile, keyFile string) string {
	var b strings.Builder
	b.WriteString("tls {\n    enabled = true\n")
	for _, kv := range [][2]string{{"ca_file", caFile}, {"cert_file", certFile}, {"key_file", keyFile}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "    %s = %q\n", kv[0], kv[1])
		}
	}
	b.WriteString("  }")
	return b.String()
}

// requireNotLogged fails the test if secret appears in the agent's log
// file or its configuration file.
func requireNotLogged(t *testing.T, a *agentProc, secret string) {
	t.Helper()
	for _, path := range []string{a.logPath, a.config} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte(secret)); i >= 0 {
			line := b[bytes.LastIndexByte(b[:i], '\n')+1:]
			if j := bytes.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("the password appears in %s: %s", path, line)
		}
	}
}

// requireNotInStatus fails the test if secret appears in the running
// agent's /api/status or /api/health documents.
func requireNotInStatus(t *testing.T, a *agentProc, secret string) {
	t.Helper()
	for _, path := range []string{"/api/status", "/api/health"} {
		res, err := http.Get(a.api + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("the password appears in %s", path)
		}
	}
}

// inputHealth reads GET /api/health: its status code, status and reason.
func inputHealth(a *agentProc) (code int, status, reason, body string) {
	a.t.Helper()
	code, body = a.health()
	var h struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	json.Unmarshal([]byte(body), &h)
	return code, h.Status, h.Reason, body
}

// requireHealthy waits until /api/health answers 200.
func requireHealthy(t *testing.T, a *agentProc) {
	t.Helper()
	waitFor(t, 30*time.Second, "health ok", func() (bool, string) {
		code, body := a.health()
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
}

// TestKafkaSASLSCRAM: an agent logs in to the broker's SASL_PLAINTEXT
// listener with SCRAM-SHA-512, the password given through the environment:
// every record is indexed exactly once, and the password appears in no log
// line, in the configuration file or in /api/status.
func TestKafkaSASLSCRAM(t *testing.T) {
	const (
		partitions = 3
		n          = 5_000
	)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		Brokers:    stack.KafkaSASLBrokers,
		KafkaExtra: saslBlock("SCRAM-SHA-512", stack.KafkaSASLUser),
		Env:        []string{"KAFKA_TEST_PASSWORD=" + stack.KafkaSASLPassword}}
	a := startAgent(t, o)
	waitIndexed(t, a, o.Index, n, 2*time.Minute)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	requireHealthy(t, a)
	requireNotInStatus(t, a, stack.KafkaSASLPassword)
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)
	requireNotLogged(t, a, stack.KafkaSASLPassword)
}

// TestKafkaTLS: an agent on the broker's SSL listener, trusting the
// stack's CA and presenting a client certificate, indexes every record
// exactly once. An agent without ca_file (so with the system's roots) on
// the same listener cannot verify the broker: health answers 503
// input_failing naming the certificate, the log says so at error level, it
// keeps running and indexes nothing.
func TestKafkaTLS(t *testing.T) {
	const (
		partitions = 2
		n          = 3_000
	)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		Brokers:    stack.KafkaTLSBrokers,
		KafkaExtra: tlsBlock(stack.KafkaTLSCA, stack.KafkaTLSClientCert, stack.KafkaTLSClientKey)}
	a := startAgent(t, o)
	waitIndexed(t, a, o.Index, n, 2*time.Minute)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	requireHealthy(t, a)
	a.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)

	// Without the CA.
	o2 := agentOpts{Topic: topic, Group: topic + "-noca", Index: topic + "-noca", DataDir: t.TempDir(),
		Brokers: stack.KafkaTLSBrokers, KafkaExtra: tlsBlock("", "", "")}
	b := startAgent(t, o2)
	waitFor(t, 30*time.Second, "health says the input fails on the certificate", func() (bool, string) {
		b.requireRunning("while it could not verify the broker")
		code, status, reason, body := inputHealth(b)
		return code == http.StatusServiceUnavailable && status == "input_failing" && strings.Contains(reason, "certificate"),
			fmt.Sprintf("%d %s", code, body)
	})
	_, _, reason, _ := inputHealth(b)
	t.Logf("without ca_file: %s", reason)
	line := b.lastLogLine("certificate")
	if !strings.Contains(line, `"level":"ERROR"`) || !strings.Contains(line, "verify") {
		t.Errorf("no error line about verifying the certificate; last line naming it: %s", line)
	}
	time.Sleep(3 * time.Second)
	b.requireRunning("while it could not verify the broker")
	if got := esCount(t, o2.Index); got != 0 {
		t.Errorf("%d documents indexed without a verified broker", got)
	}
	if code, status, _, body := inputHealth(b); code != http.StatusServiceUnavailable || status != "input_failing" {
		t.Errorf("health after 3s more: %d %s", code, body)
	}
	b.stop(30 * time.Second)
}

// TestKafkaWrongPassword: with a wrong SASL password the agent cannot join
// its group. Within 30s /api/health answers 503 input_failing with a reason
// about authentication, and the log has an error line that says what to
// check; the agent keeps running and retrying, indexes and commits nothing,
// stops cleanly on SIGTERM and never logs the password. Started again with
// the right password on the same data directory it indexes every record
// exactly once.
func TestKafkaWrongPassword(t *testing.T) {
	const (
		partitions = 2
		n          = 1_000
		wrong      = "wrong-kafka-password-SECRET456"
	)
	topic := newTopic(t, partitions)
	produce(t, topic, 0, n)
	o := agentOpts{Topic: topic, Group: topic, Index: topic, DataDir: t.TempDir(),
		Brokers:    stack.KafkaSASLBrokers,
		KafkaExtra: saslBlock("SCRAM-SHA-512", stack.KafkaSASLUser),
		Env:        []string{"KAFKA_TEST_PASSWORD=" + wrong}}
	a := startAgent(t, o)
	start := time.Now()
	waitFor(t, 30*time.Second, "health says the input fails to authenticate", func() (bool, string) {
		a.requireRunning("while its Kafka password was wrong")
		code, status, reason, body := inputHealth(a)
		return code == http.StatusServiceUnavailable && status == "input_failing" &&
			strings.Contains(strings.ToLower(reason), "authentication"), fmt.Sprintf("%d %s", code, body)
	})
	_, _, reason, _ := inputHealth(a)
	t.Logf("after %s: %s", time.Since(start).Round(100*time.Millisecond), reason)
	line := a.lastLogLine("kafka authentication failed")
	if !strings.Contains(line, `"level":"ERROR"`) || !strings.Contains(line, "check the sasl username, password and mechanism") {
		t.Errorf("no error line saying what to check; got: %q", line)
	}

	// It keeps retrying (kafka-go's join backoff is 5s) and stays failing.
	time.Sleep(8 * time.Second)
	a.requireRunning("while its Kafka password was wrong")
	if code, status, _, body := inputHealth(a); code != http.StatusServiceUnavailable || status != "input_failing" {
		t.Errorf("health after 8s more: %d %s", code, body)
	}
	// The log holds back repeats of an error (one line per 10 s window);
	// the status's recent errors count every one.
	var st struct {
		Recent []struct {
			Message string `json:"msg"`
			Count   int    `json:"count"`
		} `json:"recent_errors"`
	}
	a.getJSON("GET", "/api/status", &st)
	tries := 0
	for _, e := range st.Recent {
		if strings.Contains(e.Message, "kafka authentication failed") {
			tries += e.Count
		}
	}
	if tries < 2 {
		t.Errorf("%d failed logins in %s: the input stopped retrying; recent errors %+v", tries, time.Since(start).Round(time.Second), st.Recent)
	}
	if got := esCount(t, o.Index); got != 0 {
		t.Errorf("%d documents indexed with a wrong Kafka password", got)
	}
	for p, off := range committedOffsets(t, o.Group, topic, partitions) {
		if off >= 0 {
			t.Errorf("partition %d: committed offset %d without a login", p, off)
		}
	}
	requireNotInStatus(t, a, wrong)
	a.stop(30 * time.Second)
	requireNotLogged(t, a, wrong)

	o.Env = []string{"KAFKA_TEST_PASSWORD=" + stack.KafkaSASLPassword}
	a2 := startAgent(t, o)
	waitIndexed(t, a2, o.Index, n, 2*time.Minute)
	waitCommittedAtEnd(t, o.Group, topic, partitions)
	requireHealthy(t, a2)
	a2.stop(30 * time.Second)
	assertExactlyOnce(t, o.Index, topic, partitions, n)
	requireNotLogged(t, a2, stack.KafkaSASLPassword)
}
