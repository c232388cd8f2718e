// Package stacktest runs the real servers the end-to-end tests talk to: one
// Apache Kafka broker (KRaft, broker+controller in one JVM) and one
// Elasticsearch node, both on 127.0.0.1 with free ports, fetched from Maven
// Central with mvn and run with the machine's Java (17 or newer).
//
// The servers are ordinary background processes that outlive the process
// that started them, so one `test/e2e/stack up` serves many test runs. Their
// state (ports, pids, data, logs) lives in one directory, see [Dir]. Up reuses
// a running healthy stack; Down stops it and deletes its data.
//
// See test/e2e/README.md for the command-line tool and debugging advice.
package stacktest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/scram"
)

//go:embed pom.xml
var pomXML []byte

// Versions of the servers, as pinned in pom.xml.
var (
	KafkaVersion = pomVersion(pomXML, "kafka.version")
	ESVersion    = pomVersion(pomXML, "elasticsearch.version")
)

// Environment variables that configure the stack.
const (
	// EnvDir overrides the state directory (default /tmp/shipper-stack-$UID).
	EnvDir = "SHIPPER_STACK_DIR"
	// EnvJavaHome selects the Java installation for both servers (default:
	// $JAVA_HOME, else `java` on PATH).
	EnvJavaHome = "SHIPPER_STACK_JAVA_HOME"
	// EnvESJavaHome selects the Java installation for Elasticsearch only.
	EnvESJavaHome = "SHIPPER_STACK_ES_JAVA_HOME"
)

// JVM heap of each server.
const (
	kafkaHeap = "512m"
	esHeap    = "512m"
)

// How long a server may take to become healthy after it was started, and how
// long it gets between SIGTERM and SIGKILL.
const (
	kafkaStartTimeout = 2 * time.Minute
	esStartTimeout    = 4 * time.Minute
	kafkaStopGrace    = 15 * time.Second
	esStopGrace       = 30 * time.Second
	logTailLines      = 40
)

// The broker's one user, on its SASL_PLAINTEXT listener, for every
// mechanism (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN). A fixed test password:
// the broker only listens on 127.0.0.1.
const (
	SASLUser     = "shipper"
	SASLPassword = "shipper-e2e-7Rk2vQp9"
)

// layoutVersion is what a running stack must have been started with to be
// reused: 2 added the broker's SASL_PLAINTEXT and SSL listeners. Up
// restarts a stack recorded with another version (older states have 0).
const layoutVersion = 2

// Stack is a running stack: where to reach its servers.
type Stack struct {
	KafkaBrokers string // host:port of the broker's PLAINTEXT listener, e.g. 127.0.0.1:40123
	// KafkaSASLBrokers is the SASL_PLAINTEXT listener (SCRAM-SHA-256,
	// SCRAM-SHA-512, PLAIN) where KafkaSASLUser and KafkaSASLPassword log in.
	KafkaSASLBrokers  string
	KafkaSASLUser     string
	KafkaSASLPassword string
	// KafkaTLSBrokers is the SSL listener. Its certificate (for 127.0.0.1
	// and localhost) is signed by the CA in KafkaTLSCA; it asks for, but
	// does not require, a client certificate such as KafkaTLSClientCert
	// with KafkaTLSClientKey (signed by the same CA). All are PEM files.
	KafkaTLSBrokers    string
	KafkaTLSCA         string
	KafkaTLSClientCert string
	KafkaTLSClientKey  string
	ESURL              string // e.g. http://127.0.0.1:40125
	Dir                string // state directory
	// The secured Elasticsearch node, when it runs (UpSecure starts it;
	// else these are empty). ESSecureURL is HTTPS, with a certificate for
	// 127.0.0.1 and localhost signed by the CA in ESSecureCA; the node asks
	// for (does not require) a client certificate such as
	// ESSecureClientCert with ESSecureClientKey. ESSecureUser and
	// ESSecurePassword log in (basic authentication; role superuser).
	// ESSecureBearerToken is a service account token of
	// elastic/fleet-server (Authorization: Bearer), which may write only
	// to logs-*, metrics-* and traces-* indices. There is no API key: see
	// secure.go.
	ESSecureURL         string
	ESSecureCA          string
	ESSecureClientCert  string
	ESSecureClientKey   string
	ESSecureUser        string
	ESSecurePassword    string
	ESSecureBearerToken string
}

// newStack describes the stack in dir whose broker listens on kafkaPorts
// (by listener name, as recorded in the state) and whose Elasticsearch
// answers at esURL.
func newStack(dir string, kafkaPorts map[string]int, esURL string) *Stack {
	addr := func(listener string) string { return fmt.Sprintf("127.0.0.1:%d", kafkaPorts[listener]) }
	l := &layout{dir: dir}
	return &Stack{
		KafkaBrokers:       addr("plaintext"),
		KafkaSASLBrokers:   addr("sasl_plaintext"),
		KafkaSASLUser:      SASLUser,
		KafkaSASLPassword:  SASLPassword,
		KafkaTLSBrokers:    addr("ssl"),
		KafkaTLSCA:         filepath.Join(l.kafkaTLSDir(), caFile),
		KafkaTLSClientCert: filepath.Join(l.kafkaTLSDir(), clientCertFile),
		KafkaTLSClientKey:  filepath.Join(l.kafkaTLSDir(), clientKeyFile),
		ESURL:              esURL,
		Dir:                dir,
	}
}

// Env returns the shell-style lines `stack up` prints, KEY=value, in the
// order of the README: KAFKA_BROKERS, KAFKA_SASL_BROKERS, KAFKA_TLS_BROKERS,
// KAFKA_TLS_CA, KAFKA_TLS_CLIENT_CERT, KAFKA_TLS_CLIENT_KEY,
// KAFKA_SASL_USER, KAFKA_SASL_PASSWORD, ES_URL; then, while the secured
// node runs, ES_SECURE_URL, ES_SECURE_CA, ES_SECURE_CLIENT_CERT,
// ES_SECURE_CLIENT_KEY, ES_SECURE_USER, ES_SECURE_PASSWORD,
// ES_SECURE_BEARER_TOKEN.
func (s *Stack) Env() []string {
	env := []string{
		"KAFKA_BROKERS=" + s.KafkaBrokers,
		"KAFKA_SASL_BROKERS=" + s.KafkaSASLBrokers,
		"KAFKA_TLS_BROKERS=" + s.KafkaTLSBrokers,
		"KAFKA_TLS_CA=" + s.KafkaTLSCA,
		"KAFKA_TLS_CLIENT_CERT=" + s.KafkaTLSClientCert,
		"KAFKA_TLS_CLIENT_KEY=" + s.KafkaTLSClientKey,
		"KAFKA_SASL_USER=" + s.KafkaSASLUser,
		"KAFKA_SASL_PASSWORD=" + s.KafkaSASLPassword,
		"ES_URL=" + s.ESURL,
	}
	if s.ESSecureURL != "" {
		env = append(env,
			"ES_SECURE_URL="+s.ESSecureURL,
			"ES_SECURE_CA="+s.ESSecureCA,
			"ES_SECURE_CLIENT_CERT="+s.ESSecureClientCert,
			"ES_SECURE_CLIENT_KEY="+s.ESSecureClientKey,
			"ES_SECURE_USER="+s.ESSecureUser,
			"ES_SECURE_PASSWORD="+s.ESSecurePassword,
			"ES_SECURE_BEARER_TOKEN="+s.ESSecureBearerToken,
		)
	}
	return env
}

// TLSConfig returns a client TLS configuration for KafkaTLSBrokers: it
// trusts the stack's CA and, with clientCert, presents the client
// certificate.
func (s *Stack) TLSConfig(clientCert bool) (*tls.Config, error) {
	ca, err := os.ReadFile(s.KafkaTLSCA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s holds no PEM certificate", s.KafkaTLSCA)
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if clientCert {
		c, err := tls.LoadX509KeyPair(s.KafkaTLSClientCert, s.KafkaTLSClientKey)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// Dir returns the state directory: $SHIPPER_STACK_DIR, or
// /tmp/shipper-stack-$UID.
func Dir() string {
	d := os.Getenv(EnvDir)
	if d == "" {
		// Deliberately not $TMPDIR: that may be a private directory the
		// Elasticsearch user cannot enter.
		d = "/tmp/shipper-stack-" + strconv.Itoa(os.Getuid())
	}
	if abs, err := filepath.Abs(d); err == nil {
		d = abs
	}
	return d
}

// StackStatus describes what runs; [Status] returns it. (Go does not allow a
// type and a function both named Status in one package.)
type StackStatus struct {
	Dir           string
	StateFile     string // absent when nothing was started
	Kafka         ServerStatus
	Elasticsearch ServerStatus
	// SecureElasticsearch is the secured node, started on demand
	// (UpSecure); PID 0 when it was not. OK does not depend on it.
	SecureElasticsearch ServerStatus
}

// ServerStatus describes one server of the stack.
type ServerStatus struct {
	Name      string         // "kafka", "elasticsearch" or "es-secure"
	Version   string         // version the stack started
	PID       int            // process id (the session leader); 0 if not started
	Running   bool           // the process is alive
	Healthy   bool           // it answered a request just now
	Addr      string         // 127.0.0.1:port (Kafka) or http://127.0.0.1:port (Elasticsearch)
	Ports     map[string]int // all its listeners by name
	StartedAt time.Time      // zero if not started
	LogFile   string         // stdout+stderr of the server
	Problem   string         // why it is not running/healthy; empty if fine
	Detail    string         // e.g. "cluster yellow" for Elasticsearch
}

// OK reports whether both servers run and are healthy.
func (s StackStatus) OK() bool { return s.Kafka.Healthy && s.Elasticsearch.Healthy }

// Stack returns the endpoints of the stack, or nil unless s.OK().
func (s StackStatus) Stack() *Stack {
	if !s.OK() {
		return nil
	}
	st := newStack(s.Dir, s.Kafka.Ports, s.Elasticsearch.Addr)
	if ss := s.SecureElasticsearch; ss.Healthy {
		st.withSecure(s.Dir, ss.Addr)
	}
	return st
}

// String renders the status for humans, one server per line.
func (s StackStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "state dir: %s\n", s.Dir)
	servers := []ServerStatus{s.Kafka, s.Elasticsearch}
	if s.SecureElasticsearch.PID != 0 { // started on demand only
		servers = append(servers, s.SecureElasticsearch)
	}
	for _, srv := range servers {
		switch {
		case srv.PID == 0:
			fmt.Fprintf(&b, "%-13s not started", srv.Name)
		case srv.Healthy:
			fmt.Fprintf(&b, "%-13s %s healthy  pid %d  %s  ports %v  up %s", srv.Name, srv.Version, srv.PID, srv.Addr, srv.Ports, time.Since(srv.StartedAt).Round(time.Second))
			if srv.Detail != "" {
				fmt.Fprintf(&b, "  (%s)", srv.Detail)
			}
		case srv.Running:
			fmt.Fprintf(&b, "%-13s %s UNHEALTHY  pid %d  %s  ports %v", srv.Name, srv.Version, srv.PID, srv.Addr, srv.Ports)
		default:
			fmt.Fprintf(&b, "%-13s %s NOT RUNNING  (was pid %d, %s)", srv.Name, srv.Version, srv.PID, srv.Addr)
		}
		if srv.Problem != "" && srv.PID != 0 {
			fmt.Fprintf(&b, "\n              problem: %s", srv.Problem)
		}
		if srv.LogFile != "" {
			fmt.Fprintf(&b, "\n              log: %s", srv.LogFile)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// state is the JSON state file.
type state struct {
	// Layout is the layoutVersion the stack was started with.
	Layout        int         `json:"layout"`
	Kafka         serverState `json:"kafka"`
	Elasticsearch serverState `json:"elasticsearch"`
	// SecureES is the secured node, once UpSecure started it.
	SecureES *serverState `json:"secure_elasticsearch,omitempty"`
}

type serverState struct {
	Version   string         `json:"version"`
	PID       int            `json:"pid"`
	StartTime uint64         `json:"proc_start_time"` // /proc/PID/stat field 22, guards against pid reuse
	Ports     map[string]int `json:"ports"`
	Addr      string         `json:"addr"`
	LogFile   string         `json:"log_file"`
	User      string         `json:"user,omitempty"`
	StartedAt time.Time      `json:"started_at"`
}

func (s serverState) alive() bool { return alive(s.PID, s.StartTime) }

// layout knows the paths inside the state directory.
type layout struct{ dir string }

func (l *layout) lockFile() string     { return filepath.Join(l.dir, "lock") }
func (l *layout) stateFile() string    { return filepath.Join(l.dir, "state.json") }
func (l *layout) distDir() string      { return filepath.Join(l.dir, "dist") }
func (l *layout) kafkaDist() string    { return filepath.Join(l.distDir(), "kafka-"+KafkaVersion) }
func (l *layout) esDist() string       { return filepath.Join(l.distDir(), "elasticsearch-"+ESVersion) }
func (l *layout) kafkaDir() string     { return filepath.Join(l.dir, "kafka") }
func (l *layout) esDir() string        { return filepath.Join(l.dir, "elasticsearch") }
func (l *layout) logsDir() string      { return filepath.Join(l.dir, "logs") }
func (l *layout) kafkaLog() string     { return filepath.Join(l.logsDir(), "kafka.log") }
func (l *layout) esLog() string        { return filepath.Join(l.logsDir(), "elasticsearch.log") }
func (l *layout) esLogsDir() string    { return filepath.Join(l.logsDir(), "elasticsearch") }
func (l *layout) kafkaDataDir() string { return filepath.Join(l.kafkaDir(), "data") }
func (l *layout) kafkaTLSDir() string  { return filepath.Join(l.kafkaDir(), "tls") }
func (l *layout) kafkaProps() string   { return filepath.Join(l.kafkaDir(), "server.properties") }
func (l *layout) kafkaLog4j() string   { return filepath.Join(l.kafkaDir(), "log4j.properties") }
func (l *layout) esDataDir() string    { return filepath.Join(l.esDir(), "data") }

func (l *layout) readState() (*state, error) {
	b, err := os.ReadFile(l.stateFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("corrupt state file %s (test/e2e/stack down cleans up): %w", l.stateFile(), err)
	}
	return &st, nil
}

func (l *layout) writeState(st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := l.stateFile() + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, l.stateFile())
}

// mkdir creates the state directory with mode 0755.
func (l *layout) mkdir() error {
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return fmt.Errorf("creating the stack directory: %w", err)
	}
	return os.Chmod(l.dir, 0o755)
}

// lock takes the stack's exclusive lock (flock on DIR/lock), waiting for
// other stack commands as long as ctx allows.
func (l *layout) lock(ctx context.Context, log io.Writer) (unlock func(), err error) {
	f, err := os.OpenFile(l.lockFile(), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", l.lockFile(), err)
		}
		if !said {
			fmt.Fprintf(log, "stack: waiting for another stack command (lock %s)\n", l.lockFile())
			said = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("waiting for the stack lock %s: %w", l.lockFile(), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Up starts the stack, or returns the running one if both servers are alive
// and healthy. Missing server distributions are fetched with Maven first
// (this takes a while the very first time). Progress goes to log (may be nil).
// Concurrent calls, also from different processes, are serialized; the
// second one reuses what the first one started.
func Up(ctx context.Context, log io.Writer) (*Stack, error) {
	if log == nil {
		log = io.Discard
	}
	l := &layout{dir: Dir()}
	if err := l.mkdir(); err != nil {
		return nil, err
	}
	unlock, err := l.lock(ctx, log)
	if err != nil {
		return nil, err
	}
	defer unlock()

	st, err := l.readState()
	if err != nil {
		// Leftover servers are still found by stopStrays below.
		fmt.Fprintf(log, "stack: ignoring the state file: %v\n", err)
		st = nil
	}
	if st != nil {
		problem := checkRunning(ctx, l.dir, st, 3)
		if problem == "" {
			fmt.Fprintf(log, "stack: reusing the running stack in %s\n", l.dir)
			return st.stack(l.dir), nil
		}
		fmt.Fprintf(log, "stack: the recorded stack is not usable (%s); restarting it\n", problem)
		l.stopServers(ctx, st, log)
		os.Remove(l.stateFile())
	}
	if err := l.stopStrays(ctx, log); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	java, err := findJava(ctx, EnvJavaHome)
	if err != nil {
		return nil, err
	}
	esJava := java
	if os.Getenv(EnvESJavaHome) != "" {
		if esJava, err = findJava(ctx, EnvESJavaHome); err != nil {
			return nil, err
		}
	}
	user, err := esRunAs(log)
	if err != nil {
		return nil, err
	}
	if err := checkTraversable(l.dir, user); err != nil {
		return nil, err
	}
	if err := checkTraversable(esJava.Home, user); err != nil {
		return nil, fmt.Errorf("Java for Elasticsearch: %w", err)
	}
	if err := l.ensureDists(ctx, log); err != nil {
		return nil, err
	}

	// A port chosen as free may be taken by someone else before the server
	// binds it; try again with new ports in that case.
	for attempt := 1; ; attempt++ {
		st, err := l.start(ctx, log, java, esJava, user)
		if err == nil {
			return st.stack(l.dir), nil
		}
		if attempt >= 3 || !errors.Is(err, errPortTaken) || ctx.Err() != nil {
			return nil, err
		}
		fmt.Fprintf(log, "stack: a port was taken meanwhile; retrying with new ports\n")
	}
}

func (st *state) stack(dir string) *Stack {
	s := newStack(dir, st.Kafka.Ports, st.Elasticsearch.Addr)
	if st.SecureES != nil && st.SecureES.alive() {
		s.withSecure(dir, st.SecureES.Addr)
	}
	return s
}

// checkRunning returns "" if both recorded servers are alive, of the current
// versions and layout and answer requests (tries times, a second apart),
// else why not.
func checkRunning(ctx context.Context, dir string, st *state, tries int) string {
	if st.Kafka.Version != KafkaVersion || st.Elasticsearch.Version != ESVersion {
		return fmt.Sprintf("it runs Kafka %s and Elasticsearch %s, want %s and %s",
			st.Kafka.Version, st.Elasticsearch.Version, KafkaVersion, ESVersion)
	}
	if st.Layout != layoutVersion {
		return fmt.Sprintf("it was started by an older stacktest (layout %d, want %d: a broker with SASL and TLS listeners)",
			st.Layout, layoutVersion)
	}
	var problem string
	for i := 0; i < tries; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err().Error()
			case <-time.After(time.Second):
			}
		}
		switch {
		case !st.Kafka.alive():
			return fmt.Sprintf("Kafka (pid %d) is not running", st.Kafka.PID)
		case !st.Elasticsearch.alive():
			return fmt.Sprintf("Elasticsearch (pid %d) is not running", st.Elasticsearch.PID)
		}
		kerr := st.stack(dir).kafkaHealth(ctx)
		_, eerr := esHealth(ctx, st.Elasticsearch.Addr, false)
		if kerr == nil && eerr == nil {
			return ""
		}
		problem = errors.Join(kerr, eerr).Error()
	}
	return problem
}

// kafkaHealth makes a metadata request on each of the broker's client
// listeners: PLAINTEXT, SASL_PLAINTEXT (logged in with SCRAM-SHA-512) and
// SSL (verifying the broker's certificate, presenting the client's).
func (s *Stack) kafkaHealth(ctx context.Context) error {
	if err := kafkaMetadata(ctx, s.KafkaBrokers, &kafka.Dialer{Timeout: 3 * time.Second}); err != nil {
		return err
	}
	mech, err := scram.Mechanism(scram.SHA512, s.KafkaSASLUser, s.KafkaSASLPassword)
	if err != nil {
		return err
	}
	tlsCfg, err := s.TLSConfig(true)
	if err != nil {
		return fmt.Errorf("Kafka TLS listener: client configuration: %w", err)
	}
	return errors.Join(
		kafkaMetadata(ctx, s.KafkaSASLBrokers, &kafka.Dialer{Timeout: 3 * time.Second, SASLMechanism: mech}),
		kafkaMetadata(ctx, s.KafkaTLSBrokers, &kafka.Dialer{Timeout: 3 * time.Second, TLS: tlsCfg}))
}

// kafkaMetadata dials addr with d and makes a metadata request.
func kafkaMetadata(ctx context.Context, addr string, d *kafka.Dialer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	what := "Kafka at " + addr
	switch {
	case d.SASLMechanism != nil:
		what += " (SASL " + d.SASLMechanism.Name() + ")"
	case d.TLS != nil:
		what += " (TLS)"
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	brokers, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("%s: metadata request: %w", what, err)
	}
	if len(brokers) == 0 {
		return fmt.Errorf("%s: metadata lists no brokers", what)
	}
	return nil
}

// esHealth asks Elasticsearch for its cluster health and returns the
// cluster status (green, yellow, red). With waitYellow (used while starting)
// a red cluster is an error; otherwise any answer counts, so that a test
// which left a red index behind does not make `up` restart the stack.
func esHealth(ctx context.Context, url string, waitYellow bool) (string, error) {
	return esHealthWith(ctx, http.DefaultClient, url, nil, waitYellow)
}

// esHealthWith is esHealth with client c, and auth (if not nil) setting
// the request's credentials.
func esHealthWith(ctx context.Context, c *http.Client, url string, auth func(*http.Request), waitYellow bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	path := "/_cluster/health"
	if waitYellow {
		path += "?wait_for_status=yellow&timeout=2s"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+path, nil)
	if err != nil {
		return "", err
	}
	if auth != nil {
		auth(req)
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", fmt.Errorf("Elasticsearch at %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var health struct {
		Status string `json:"status"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &health) != nil || health.Status == "" {
		return "", fmt.Errorf("Elasticsearch at %s: GET %s: %s %s", url, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return health.Status, nil
}

var errPortTaken = errors.New("port already in use")

// started is a server process this process started.
type started struct {
	name    string
	st      serverState
	exited  chan struct{} // closed when the process exited
	waitErr error         // valid after exited is closed
}

// start starts both servers from scratch and waits until they are healthy.
// On failure it stops whatever it started.
func (l *layout) start(ctx context.Context, log io.Writer, java, esJava javaHome, user *runAs) (*state, error) {
	for _, d := range []string{l.kafkaDir(), l.esDir(), l.esSecureDir(), l.logsDir()} {
		if err := os.RemoveAll(d); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(l.logsDir(), 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	kcfg := kafkaConfig{Port: ports[0], ControllerPort: ports[1], SASLPort: ports[4], TLSPort: ports[5],
		DataDir: l.kafkaDataDir(), TLSDir: l.kafkaTLSDir()}
	ecfg := esConfig{HTTPPort: ports[2], TransportPort: ports[3], DataDir: l.esDataDir(), LogsDir: l.esLogsDir()}

	// Phase 1: prepare and launch both (Kafka's storage format and
	// Elasticsearch's start overlap).
	var k, e *started
	var kerr, eerr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); k, kerr = l.launchKafka(ctx, log, java, kcfg) }()
	go func() { defer wg.Done(); e, eerr = l.launchES(ctx, log, esJava, ecfg, user) }()
	wg.Wait()
	st := &state{Layout: layoutVersion}
	if k != nil {
		st.Kafka = k.st
	}
	if e != nil {
		st.Elasticsearch = e.st
	}
	if err := errors.Join(kerr, eerr); err != nil {
		l.stopServers(context.Background(), st, io.Discard)
		return nil, err
	}
	if err := l.writeState(st); err != nil {
		l.stopServers(context.Background(), st, io.Discard)
		return nil, err
	}

	// Phase 2: wait until both answer. If one fails, stop waiting for the
	// other (and report only the failure).
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	await := func(s *started, timeout time.Duration, health func(context.Context) error) error {
		err := l.awaitHealthy(wctx, log, s, timeout, health)
		if err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				return nil // the other server failed; its error is reported
			}
			cancel()
		}
		return err
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		kerr = await(k, kafkaStartTimeout, func(ctx context.Context) error { return newStack(l.dir, k.st.Ports, "").kafkaHealth(ctx) })
	}()
	go func() {
		defer wg.Done()
		eerr = await(e, esStartTimeout, func(ctx context.Context) error { _, err := esHealth(ctx, e.st.Addr, true); return err })
	}()
	wg.Wait()
	if err := errors.Join(kerr, eerr); err != nil {
		fmt.Fprintf(log, "stack: start failed; stopping what was started\n")
		l.stopServers(context.Background(), st, io.Discard)
		os.Remove(l.stateFile())
		return nil, err
	}
	return st, nil
}

// awaitHealthy polls health until it succeeds, the process exits, the
// timeout passes or ctx ends.
func (l *layout) awaitHealthy(ctx context.Context, log io.Writer, s *started, timeout time.Duration, health func(context.Context) error) error {
	begin := time.Now()
	deadline := begin.Add(timeout)
	var last error
	for {
		if last = health(ctx); last == nil {
			fmt.Fprintf(log, "stack: %s is ready at %s (%s)\n", s.name, s.st.Addr, time.Since(begin).Round(100*time.Millisecond))
			return nil
		}
		select {
		case <-s.exited:
			return l.startError(s, fmt.Sprintf("exited during startup (%v)", s.waitErr))
		case <-ctx.Done():
			return l.startError(s, fmt.Sprintf("did not become ready: %v (last check: %v)", ctx.Err(), last))
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return l.startError(s, fmt.Sprintf("did not become ready within %s (last check: %v)", timeout, last))
		}
	}
}

// startError builds an error with the tail of the server's log.
func (l *layout) startError(s *started, what string) error {
	b, _ := os.ReadFile(s.st.LogFile)
	err := fmt.Errorf("%s (pid %d, %s) %s; last %d lines of %s:\n%s\n(end of %s)",
		s.name, s.st.PID, s.st.Addr, what, logTailLines, s.st.LogFile, lastLines(b, logTailLines), s.st.LogFile)
	if strings.Contains(string(b), "Address already in use") {
		return errors.Join(err, errPortTaken)
	}
	return err
}

// launch starts cmd as the leader of a new session (so it outlives us and
// can be stopped as a group) with stdout and stderr appended to logFile.
func launch(name, logFile, dir string, argv, env []string, attr *syscall.SysProcAttr, st serverState) (*started, error) {
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	proc, err := os.StartProcess(argv[0], argv, &os.ProcAttr{
		Dir:   dir,
		Env:   env,
		Files: []*os.File{devnull, out, out},
		Sys:   attr,
	})
	if err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, argv[0], err)
	}
	s := &started{name: name, st: st, exited: make(chan struct{})}
	s.st.PID = proc.Pid
	s.st.LogFile = logFile
	s.st.StartedAt = time.Now().UTC()
	if p, ok := readProc(proc.Pid); ok {
		s.st.StartTime = p.StartTime
	}
	go func() {
		// Reap the process if it exits while we live; it is not waited for
		// otherwise (it is meant to outlive us).
		ps, err := proc.Wait()
		if err == nil {
			err = errors.New(ps.String())
		}
		s.waitErr = err
		close(s.exited)
	}()
	return s, nil
}

// serverEnv is the environment of the servers: ours without variables that
// would change how the JVMs or Elasticsearch start.
func serverEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "ES_") || strings.HasPrefix(k, "KAFKA_") ||
			k == "JAVA_TOOL_OPTIONS" || k == "_JAVA_OPTIONS" || k == "JDK_JAVA_OPTIONS" || k == "CLASSPATH" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

func (l *layout) launchKafka(ctx context.Context, log io.Writer, java javaHome, cfg kafkaConfig) (*started, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, err
	}
	if err := writeTLSFiles(cfg.TLSDir); err != nil {
		return nil, fmt.Errorf("writing the broker's TLS files: %w", err)
	}
	if err := os.WriteFile(l.kafkaProps(), []byte(cfg.serverProperties()), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(l.kafkaLog4j(), []byte(kafkaLog4j), 0o644); err != nil {
		return nil, err
	}
	jvm := l.kafkaJVM()
	env := serverEnv()

	// Format the (empty) storage directory for KRaft, with the SCRAM users.
	format := append([]string{java.Java, "-Xmx256m"}, jvm...)
	format = append(format, "kafka.tools.StorageTool", "format", "-t", newClusterID(), "-c", l.kafkaProps())
	format = append(format, scramArgs()...)
	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	fmt.Fprintf(log, "stack: starting Kafka %s on 127.0.0.1:%d (SASL %d, TLS %d, controller %d)\n",
		KafkaVersion, cfg.Port, cfg.SASLPort, cfg.TLSPort, cfg.ControllerPort)
	out, err := runLogged(fctx, l.kafkaLog(), l.kafkaDir(), format, env)
	if err != nil {
		return nil, fmt.Errorf("formatting Kafka storage failed (%v); command: %s\n%s\n(output also in %s)",
			err, strings.Join(format, " "), lastLines(out, logTailLines), l.kafkaLog())
	}
	return l.startKafka(java, serverState{
		Version: KafkaVersion,
		Ports: map[string]int{"plaintext": cfg.Port, "sasl_plaintext": cfg.SASLPort, "ssl": cfg.TLSPort,
			"controller": cfg.ControllerPort},
		Addr: fmt.Sprintf("127.0.0.1:%d", cfg.Port),
	})
}

// kafkaJVM returns the JVM options of the broker and its tools.
func (l *layout) kafkaJVM() []string {
	return []string{
		"-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss1m",
		"-Djava.awt.headless=true",
		"-Dlog4j.configuration=file:" + l.kafkaLog4j(),
		"-Dkafka.logs.dir=" + l.logsDir(),
		"-cp", filepath.Join(l.kafkaDist(), "*"),
	}
}

// startKafka starts the broker on the configuration and storage already in
// kafka/; st says what it listens on.
func (l *layout) startKafka(java javaHome, st serverState) (*started, error) {
	argv := append([]string{java.Java, "-Xms" + kafkaHeap, "-Xmx" + kafkaHeap}, l.kafkaJVM()...)
	argv = append(argv, "kafka.Kafka", l.kafkaProps())
	return launch("Kafka", l.kafkaLog(), l.kafkaDir(), argv, serverEnv(), &syscall.SysProcAttr{Setsid: true}, st)
}

// runLogged runs argv to completion, appending its output to logFile too.
func runLogged(ctx context.Context, logFile, dir string, argv, env []string) ([]byte, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "+ %s\n", strings.Join(argv, " "))
	var buf strings.Builder
	cmd := execCommand(ctx, argv, dir, env)
	w := io.MultiWriter(f, &buf)
	cmd.Stdout, cmd.Stderr = w, w
	err = cmd.Run()
	return []byte(buf.String()), err
}

func (l *layout) launchES(ctx context.Context, log io.Writer, java javaHome, cfg esConfig, user *runAs) (*started, error) {
	return l.launchESNode(log, java, esNode{name: "Elasticsearch", dir: l.esDir(), logFile: l.esLog(), heap: esHeap, cfg: cfg}, user)
}

// esNode is one Elasticsearch node of the stack: where it lives and how it
// is configured.
type esNode struct {
	name    string // for messages: "Elasticsearch"
	dir     string // config/, data/, tmp/ (all deleted by down)
	logFile string // its stdout and stderr
	heap    string
	cfg     esConfig
	// prepare, if not nil, writes more files into the node's config
	// directory (certificates, users) before it starts.
	prepare func(conf string) error
}

// launchESNode writes a node's configuration into a fresh copy of the
// distribution's config directory and starts it as user.
func (l *layout) launchESNode(log io.Writer, java javaHome, n esNode, user *runAs) (*started, error) {
	conf := filepath.Join(n.dir, "config")
	tmp := filepath.Join(n.dir, "tmp")
	if err := copyTree(filepath.Join(l.esDist(), "config"), conf); err != nil {
		return nil, fmt.Errorf("copying the Elasticsearch config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(conf, "elasticsearch.yml"), []byte(n.cfg.elasticsearchYML()), 0o644); err != nil {
		return nil, err
	}
	if n.prepare != nil {
		if err := n.prepare(conf); err != nil {
			return nil, fmt.Errorf("%s: %w", n.name, err)
		}
	}
	for _, d := range []string{n.cfg.DataDir, tmp, n.cfg.LogsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// Everything Elasticsearch writes belongs to the user it runs as.
	if err := chownTree(n.dir, user); err != nil {
		return nil, err
	}
	if err := chownTree(n.cfg.LogsDir, user); err != nil {
		return nil, err
	}
	env := serverEnv(
		"ES_JAVA_HOME="+java.Home,
		"ES_PATH_CONF="+conf,
		"ES_TMPDIR="+tmp,
		"ES_JAVA_OPTS=-Xms"+n.heap+" -Xmx"+n.heap,
	)
	who := ""
	if user != nil {
		who = " as user " + user.Name
		env = setEnv(env, "HOME", n.dir)
		env = setEnv(env, "USER", user.Name)
		env = setEnv(env, "LOGNAME", user.Name)
	}
	addr := fmt.Sprintf("%s://127.0.0.1:%d", n.cfg.scheme(), n.cfg.HTTPPort)
	fmt.Fprintf(log, "stack: starting %s %s on %s (transport %d)%s\n", n.name, ESVersion, addr, n.cfg.TransportPort, who)
	argv := []string{filepath.Join(l.esDist(), "bin", "elasticsearch")}
	st := serverState{
		Version: ESVersion,
		Ports:   map[string]int{"http": n.cfg.HTTPPort, "transport": n.cfg.TransportPort},
		Addr:    addr,
	}
	if user != nil {
		st.User = user.Name
	}
	return launch(n.name, n.logFile, n.dir, argv, env, user.credential(), st)
}

func execCommand(ctx context.Context, argv []string, dir string, env []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Env = dir, env
	return cmd
}

func setEnv(env []string, k, v string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, k+"=") {
			out = append(out, kv)
		}
	}
	return append(out, k+"="+v)
}

// stopServers stops the recorded servers, the secured node too
// (concurrently).
func (l *layout) stopServers(ctx context.Context, st *state, log io.Writer) {
	var wg sync.WaitGroup
	stop := func(name string, s serverState, grace time.Duration) {
		defer wg.Done()
		if s.PID == 0 {
			return
		}
		if len(sessionMembers(s.PID)) > 0 {
			fmt.Fprintf(log, "stack: stopping %s (pid %d)\n", name, s.PID)
		}
		if !stopSession(ctx, s.PID, s.StartTime, grace) {
			fmt.Fprintf(log, "stack: WARNING: %s (pid %d) survived SIGKILL\n", name, s.PID)
		}
	}
	wg.Add(2)
	go stop("Kafka", st.Kafka, kafkaStopGrace)
	go stop("Elasticsearch", st.Elasticsearch, esStopGrace)
	if st.SecureES != nil {
		wg.Add(1)
		go stop("Elasticsearch (secured)", *st.SecureES, esStopGrace)
	}
	wg.Wait()
}

// stopStrays stops processes running from this stack's directory that the
// state file does not know about (e.g. after the state file was deleted).
func (l *layout) stopStrays(ctx context.Context, log io.Writer) error {
	pids := strayServers(l.dir)
	if len(pids) == 0 {
		return nil
	}
	fmt.Fprintf(log, "stack: stopping leftover processes of %s: %v\n", l.dir, pids)
	killPids(ctx, pids, esStopGrace)
	if left := strayServers(l.dir); len(left) > 0 {
		return fmt.Errorf("could not stop leftover processes using %s: %v", l.dir, left)
	}
	return nil
}

// Down stops the stack (SIGTERM, then SIGKILL after a grace period, to each
// server's whole process group) and deletes its data. The downloaded
// distributions stay (so the next Up is fast and offline), and so do the
// logs until the next Up.
func Down(ctx context.Context, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	l := &layout{dir: Dir()}
	if _, err := os.Stat(l.dir); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(log, "stack: nothing to stop (%s does not exist)\n", l.dir)
		return nil
	}
	unlock, err := l.lock(ctx, log)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := l.readState()
	if err != nil {
		fmt.Fprintf(log, "stack: %v\n", err)
	}
	if st != nil {
		l.stopServers(ctx, st, log)
	}
	if err := l.stopStrays(ctx, log); err != nil {
		return err
	}
	var errs []error
	for _, p := range []string{l.stateFile(), l.kafkaDir(), l.esDir(), l.esSecureDir()} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deleting stack data: %w", err)
	}
	fmt.Fprintf(log, "stack: stopped; data deleted (logs kept in %s until the next up)\n", l.logsDir())
	return nil
}

// RestartKafka restarts the running stack's broker as a broker restart in
// production would: SIGTERM and a wait for its controlled shutdown (SIGKILL
// only after kafkaStopGrace), then a start on the same configuration, data
// and ports, without formatting the storage again. It returns once every
// listener answers, and records the new process in the state. Elasticsearch
// is not touched. Progress goes to log (may be nil).
func RestartKafka(ctx context.Context, log io.Writer) error {
	if log == nil {
		log = io.Discard
	}
	l := &layout{dir: Dir()}
	unlock, err := l.lock(ctx, log)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := l.readState()
	if err != nil {
		return err
	}
	if st == nil {
		return fmt.Errorf("no stack is recorded in %s; start it with test/e2e/stack up", l.dir)
	}
	if st.Layout != layoutVersion || st.Kafka.Version != KafkaVersion {
		return fmt.Errorf("the stack in %s was started by an older stacktest; run test/e2e/stack down, then up", l.dir)
	}
	java, err := findJava(ctx, EnvJavaHome)
	if err != nil {
		return err
	}
	begin := time.Now()
	fmt.Fprintf(log, "stack: stopping Kafka (pid %d) for a restart\n", st.Kafka.PID)
	if !stopSession(ctx, st.Kafka.PID, st.Kafka.StartTime, kafkaStopGrace) {
		return fmt.Errorf("Kafka (pid %d) survived SIGKILL", st.Kafka.PID)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fmt.Fprintf(log, "stack: Kafka stopped after %s; starting it again on %s\n", time.Since(begin).Round(100*time.Millisecond), st.Kafka.Addr)
	k, err := l.startKafka(java, serverState{Version: st.Kafka.Version, Ports: st.Kafka.Ports, Addr: st.Kafka.Addr})
	if err != nil {
		return err
	}
	// Recorded before it is healthy: a broker that fails to come back is a
	// recorded dead server, which the next Up replaces.
	st.Kafka = k.st
	if err := l.writeState(st); err != nil {
		return err
	}
	s := st.stack(l.dir)
	if err := l.awaitHealthy(ctx, log, k, kafkaStartTimeout, s.kafkaHealth); err != nil {
		return err
	}
	fmt.Fprintf(log, "stack: Kafka restarted in %s\n", time.Since(begin).Round(100*time.Millisecond))
	return nil
}

// Status reports what runs, checking each server's health now. The error is
// non-nil only if the state cannot be read; a stack that is not running is
// a StackStatus with OK() false.
func Status(ctx context.Context) (StackStatus, error) {
	l := &layout{dir: Dir()}
	s := StackStatus{
		Dir:                 l.dir,
		Kafka:               ServerStatus{Name: "kafka", Problem: "not started"},
		Elasticsearch:       ServerStatus{Name: "elasticsearch", Problem: "not started"},
		SecureElasticsearch: ServerStatus{Name: "es-secure", Problem: "not started"},
	}
	st, err := l.readState()
	if err != nil {
		return s, err
	}
	if st == nil {
		return s, nil
	}
	s.StateFile = l.stateFile()
	var wg sync.WaitGroup
	one := func(out *ServerStatus, ss serverState, health func(context.Context, string) (string, error)) {
		defer wg.Done()
		out.Version, out.PID, out.Addr, out.Ports, out.LogFile, out.StartedAt =
			ss.Version, ss.PID, ss.Addr, ss.Ports, ss.LogFile, ss.StartedAt
		out.Running = ss.alive()
		if !out.Running {
			out.Problem = "process is not running"
			return
		}
		detail, err := health(ctx, ss.Addr)
		if err != nil {
			out.Problem = err.Error()
			return
		}
		out.Healthy, out.Problem, out.Detail = true, "", detail
	}
	wg.Add(2)
	go one(&s.Kafka, st.Kafka, func(ctx context.Context, addr string) (string, error) {
		if st.Layout != layoutVersion {
			return "", fmt.Errorf("started by an older stacktest (layout %d, want %d: no SASL and TLS listeners); test/e2e/stack up restarts it",
				st.Layout, layoutVersion)
		}
		return "", st.stack(l.dir).kafkaHealth(ctx)
	})
	go one(&s.Elasticsearch, st.Elasticsearch, func(ctx context.Context, url string) (string, error) {
		color, err := esHealth(ctx, url, false)
		return "cluster " + color, err
	})
	if ss := st.SecureES; ss != nil {
		wg.Add(1)
		go one(&s.SecureElasticsearch, *ss, func(ctx context.Context, url string) (string, error) {
			color, err := l.secureHealth(ctx, url, false)
			return "cluster " + color + ", HTTPS", err
		})
	}
	wg.Wait()
	return s, nil
}

// Running returns the running stack without starting anything; it fails
// unless both servers run and are healthy.
func Running(ctx context.Context) (*Stack, error) {
	s, err := Status(ctx)
	if err != nil {
		return nil, err
	}
	if !s.OK() {
		return nil, fmt.Errorf("the test stack is not running and healthy (start it with test/e2e/stack up):\n%s", s)
	}
	return s.Stack(), nil
}
