package stacktest

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// The secured Elasticsearch node: a second node, with security on, started
// on demand by UpSecure (never by Up, so the tests that do not need it do
// not wait for it), then reused like the rest of the stack. It serves
// HTTPS with a certificate for 127.0.0.1 and localhost signed by a CA the
// stack generates (ECDSA P-256, like the broker's), asks for (does not
// require) a client certificate, knows one user in its file realm (role
// superuser) and one service account token in its service_tokens file.
// Down stops it with the rest.
//
// Everything is file-based because the integ-test distribution cannot
// create the security index: its mapping needs the pattern_capture token
// filter of the analysis-common module, which that distribution lacks
// (POST /_security/api_key answers 400 "Unknown filter type
// [pattern_capture] for [email]"). So there are no API keys, native users
// or OAuth2 access tokens on this node; the service account token is the
// bearer token that needs no index.

// The secured node's user and service account token. Fixed test
// credentials: the node only listens on 127.0.0.1 and holds nothing but
// test data.
const (
	SecureESUser     = "shipper"
	SecureESPassword = "shipper-es-e2e-4Tq8Wm2z"
	// The token is one of the built-in service account elastic/fleet-server:
	// cluster monitor, and write, create_index and auto_configure on
	// logs-*, metrics-*, traces-* (so it indexes only into such names).
	serviceAccount     = "elastic/fleet-server"
	serviceTokenName   = "shipper-e2e"
	serviceTokenSecret = "shipper-e2e-token-9Fs3Lq7Xw"
)

// SecureServiceToken is the secured node's service account token as a
// bearer token (Authorization: Bearer ...): base64, without padding, of
// the 4-byte prefix 0,1,0,1 and "elastic/fleet-server/shipper-e2e:<secret>",
// the form Elasticsearch's service account tokens take.
func SecureServiceToken() string {
	raw := append([]byte{0, 1, 0, 1}, serviceAccount+"/"+serviceTokenName+":"+serviceTokenSecret...)
	return base64.RawStdEncoding.EncodeToString(raw)
}

// secureESHeap is the secured node's heap: small, it only takes the
// security tests' few thousand documents.
const secureESHeap = "256m"

// The secured node's TLS files, in its config directory's certs/: the
// node reads certificates only from under its config directory.
const (
	esCertsDir       = "certs"
	esNodeCertFile   = "node.pem"     // the node's certificate, then the CA's
	esNodeKeyFile    = "node-key.pem" // its PKCS#8 key
	esClientCertFile = clientCertFile // a client certificate signed by the CA
	esClientKeyFile  = clientKeyFile
)

func (l *layout) esSecureDir() string     { return filepath.Join(l.dir, "elasticsearch-secure") }
func (l *layout) esSecureCerts() string   { return filepath.Join(l.esSecureDir(), "config", esCertsDir) }
func (l *layout) esSecureLog() string     { return filepath.Join(l.logsDir(), "elasticsearch-secure.log") }
func (l *layout) esSecureLogsDir() string { return filepath.Join(l.logsDir(), "elasticsearch-secure") }

// withSecure adds the endpoints of the secured node at url to s.
func (s *Stack) withSecure(dir, url string) *Stack {
	l := &layout{dir: dir}
	s.ESSecureURL = url
	s.ESSecureCA = filepath.Join(l.esSecureCerts(), caFile)
	s.ESSecureClientCert = filepath.Join(l.esSecureCerts(), esClientCertFile)
	s.ESSecureClientKey = filepath.Join(l.esSecureCerts(), esClientKeyFile)
	s.ESSecureUser, s.ESSecurePassword = SecureESUser, SecureESPassword
	s.ESSecureBearerToken = SecureServiceToken()
	return s
}

// SecureClient returns an HTTP client for ESSecureURL that trusts the
// stack's CA. Requests still need credentials (SetBasicAuth with
// ESSecureUser and ESSecurePassword, or the bearer token).
func (s *Stack) SecureClient() (*http.Client, error) {
	if s.ESSecureURL == "" {
		return nil, errors.New("the secured Elasticsearch node is not running (stacktest.UpSecure starts it)")
	}
	return httpsClient(s.ESSecureCA)
}

// httpsClient returns a client that trusts the CAs of caFile.
func httpsClient(caFile string) (*http.Client, error) {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}, nil
}

// UpSecure brings the stack up (as Up does) and the secured node with it:
// it reuses a running healthy one, else starts it (about 30 s). The
// returned Stack has the ESSecure* fields set.
// Concurrent calls are serialized by the stack's lock.
func UpSecure(ctx context.Context, log io.Writer) (*Stack, error) {
	if log == nil {
		log = io.Discard
	}
	if _, err := Up(ctx, log); err != nil {
		return nil, err
	}
	l := &layout{dir: Dir()}
	unlock, err := l.lock(ctx, log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := l.readState()
	if err != nil {
		return nil, err
	}
	if st == nil {
		return nil, fmt.Errorf("the stack in %s went down while its secured node was being started", l.dir)
	}
	if ss := st.SecureES; ss != nil {
		if ss.Version == ESVersion && ss.alive() {
			if _, err := l.secureHealth(ctx, ss.Addr, false); err == nil {
				fmt.Fprintf(log, "stack: reusing the secured Elasticsearch node at %s\n", ss.Addr)
				return st.stack(l.dir), nil
			}
		}
		fmt.Fprintf(log, "stack: the recorded secured Elasticsearch node is not usable; starting it afresh\n")
		stopSession(ctx, ss.PID, ss.StartTime, esStopGrace)
		st.SecureES = nil
		if err := l.writeState(st); err != nil {
			return nil, err
		}
	}
	java, err := findJava(ctx, EnvJavaHome)
	if err != nil {
		return nil, err
	}
	if os.Getenv(EnvESJavaHome) != "" {
		if java, err = findJava(ctx, EnvESJavaHome); err != nil {
			return nil, err
		}
	}
	user, err := esRunAs(log)
	if err != nil {
		return nil, err
	}
	for attempt := 1; ; attempt++ {
		err = l.startSecure(ctx, log, java, user, st)
		if err == nil {
			return st.stack(l.dir), nil
		}
		if attempt >= 3 || !errors.Is(err, errPortTaken) || ctx.Err() != nil {
			return nil, err
		}
		fmt.Fprintf(log, "stack: a port was taken meanwhile; retrying the secured node with new ports\n")
	}
}

// startSecure starts the secured node from scratch and waits until it
// answers, recording it in st and the state file. On failure it stops the
// node and forgets it.
func (l *layout) startSecure(ctx context.Context, log io.Writer, java javaHome, user *runAs, st *state) error {
	begin := time.Now()
	for _, d := range []string{l.esSecureDir(), l.esSecureLogsDir()} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	cfg := esConfig{HTTPPort: ports[0], TransportPort: ports[1], DataDir: filepath.Join(l.esSecureDir(), "data"),
		LogsDir: l.esSecureLogsDir(), Secure: true}
	s, err := l.launchESNode(log, java, esNode{name: "Elasticsearch (secured)", dir: l.esSecureDir(), logFile: l.esSecureLog(),
		heap: secureESHeap, cfg: cfg, prepare: writeSecureFiles}, user)
	if err != nil {
		return err
	}
	// Recorded before it answers, so that down stops a node that failed
	// to come up.
	st.SecureES = &s.st
	fail := func(err error) error {
		stopSession(context.Background(), s.st.PID, s.st.StartTime, esStopGrace)
		st.SecureES = nil
		return errors.Join(err, l.writeState(st))
	}
	if err := l.writeState(st); err != nil {
		return fail(err)
	}
	if err := l.awaitHealthy(ctx, log, s, esStartTimeout, func(ctx context.Context) error {
		_, err := l.secureHealth(ctx, s.st.Addr, true)
		return err
	}); err != nil {
		return fail(err)
	}
	fmt.Fprintf(log, "stack: secured Elasticsearch up in %s\n", time.Since(begin).Round(100*time.Millisecond))
	return nil
}

// writeSecureFiles writes the secured node's certificates, its file realm
// (users, users_roles) and its service_tokens file into its config
// directory.
func writeSecureFiles(conf string) error {
	p, err := newTestPKI("elasticsearch")
	if err != nil {
		return err
	}
	if err := writePEMFiles(filepath.Join(conf, esCertsDir), []pemFile{
		{caFile, []*pem.Block{certBlock(p.caDER)}},
		{esNodeCertFile, []*pem.Block{certBlock(p.serverDER), certBlock(p.caDER)}},
		{esNodeKeyFile, []*pem.Block{keyBlock(p.serverKey)}},
		{esClientCertFile, []*pem.Block{certBlock(p.clientDER)}},
		{esClientKeyFile, []*pem.Block{keyBlock(p.clientKey)}},
	}); err != nil {
		return fmt.Errorf("writing its TLS files: %w", err)
	}
	password, err := pbkdf2Hash(SecureESPassword)
	if err != nil {
		return err
	}
	token, err := pbkdf2Hash(serviceTokenSecret)
	if err != nil {
		return err
	}
	// The formats bin/elasticsearch-users and
	// bin/elasticsearch-service-tokens write (each would cost a JVM start).
	files := map[string]string{
		"users":          SecureESUser + ":" + password + "\n",
		"users_roles":    "superuser:" + SecureESUser + "\n",
		"service_tokens": serviceAccount + "/" + serviceTokenName + ":" + token + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// pbkdf2Hash hashes a password as Elasticsearch's PBKDF2 hasher does, a
// form its file realm verifies: {PBKDF2}<iterations>$<salt>$<key>, with
// PBKDF2-HMAC-SHA512, a 32-byte salt and a 32-byte key, both in base64.
func pbkdf2Hash(password string) (string, error) {
	const iterations = 10000
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key, err := pbkdf2.Key(sha512.New, password, salt, iterations, 32)
	if err != nil {
		return "", err
	}
	enc := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("{PBKDF2}%d$%s$%s", iterations, enc(salt), enc(key)), nil
}

// secureHealth is esHealth for the secured node: over HTTPS trusting the
// stack's CA, as SecureESUser.
func (l *layout) secureHealth(ctx context.Context, url string, waitYellow bool) (string, error) {
	c, err := httpsClient(filepath.Join(l.esSecureCerts(), caFile))
	if err != nil {
		return "", err
	}
	defer c.CloseIdleConnections()
	return esHealthWith(ctx, c, url, func(r *http.Request) { r.SetBasicAuth(SecureESUser, SecureESPassword) }, waitYellow)
}
