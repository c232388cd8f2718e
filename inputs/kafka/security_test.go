package kafka

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	plainsasl "github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/inputs/kafka/kafkatest"
	"github.com/shipper-agent/shipper/internal/hcldecode"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, as PEM files in one directory.
type testPKI struct {
	dir                                     string
	ca, serverCert, serverKey, client, ckey string // file paths
	pool                                    *x509.CertPool
	server                                  tls.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	serial := int64(0)
	create := func(tmpl, parent *x509.Certificate, pub, signer any) []byte {
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER := create(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	sKey, cKey := newKey(), newKey()
	sDER := create(&x509.Certificate{Subject: pkix.Name{CommonName: "broker"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		ca, &sKey.PublicKey, caKey)
	cDER := create(&x509.Certificate{Subject: pkix.Name{CommonName: "shipper"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, ca, &cKey.PublicKey, caKey)
	p := &testPKI{dir: dir, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.ca = write("ca.pem", "CERTIFICATE", caDER)
	p.serverCert = write("server.pem", "CERTIFICATE", sDER)
	p.serverKey = write("server-key.pem", "PRIVATE KEY", keyDER(sKey))
	p.client = write("client.pem", "CERTIFICATE", cDER)
	p.ckey = write("client-key.pem", "PRIVATE KEY", keyDER(cKey))
	var err error
	if p.server, err = tls.LoadX509KeyPair(p.serverCert, p.serverKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// problemPaths returns the sorted setting paths of the *shipper.FieldError
// values joined in err.
func problemPaths(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var paths []string
	for _, e := range errs {
		var fe *shipper.FieldError
		if !errors.As(e, &fe) {
			t.Errorf("error %q is not a *shipper.FieldError", e)
			continue
		}
		paths = append(paths, fe.Path)
	}
	slices.Sort(paths)
	return slices.Compact(paths)
}

const testPassword = "s3cret-Pa55word"

func TestValidateSecurity(t *testing.T) {
	pki := newTestPKI(t)
	missing := filepath.Join(pki.dir, "missing.pem")
	notPEM := filepath.Join(pki.dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	unreadable := filepath.Join(pki.dir, "unreadable.pem")
	if err := os.Mkdir(unreadable, 0o755); err != nil { // a directory: open works, read does not
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tls  TLSConfig
		sasl SASLConfig
		want []string // paths reported, sorted
		text []string // in the error message
	}{
		{name: "none"},
		{name: "tls with system roots", tls: TLSConfig{Enabled: true}},
		{name: "tls with every file", tls: TLSConfig{Enabled: true, CAFile: pki.ca, CertFile: pki.client, KeyFile: pki.ckey, ServerName: "localhost"}},
		{name: "tls insecure", tls: TLSConfig{Enabled: true, InsecureSkipVerify: true}},
		{name: "tls settings without enabled", tls: TLSConfig{CAFile: pki.ca},
			want: []string{"tls.enabled"}, text: []string{"set enabled = true"}},
		{name: "insecure without enabled", tls: TLSConfig{InsecureSkipVerify: true}, want: []string{"tls.enabled"}},
		{name: "missing ca file", tls: TLSConfig{Enabled: true, CAFile: missing},
			want: []string{"tls.ca_file"}, text: []string{missing, "no such file"}},
		{name: "unreadable ca file", tls: TLSConfig{Enabled: true, CAFile: unreadable},
			want: []string{"tls.ca_file"}, text: []string{unreadable}},
		{name: "ca file without certificates", tls: TLSConfig{Enabled: true, CAFile: notPEM},
			want: []string{"tls.ca_file"}, text: []string{notPEM, "no PEM certificate"}},
		{name: "cert without key", tls: TLSConfig{Enabled: true, CertFile: pki.client},
			want: []string{"tls.key_file"}, text: []string{"required with tls.cert_file"}},
		{name: "key without cert", tls: TLSConfig{Enabled: true, KeyFile: pki.ckey},
			want: []string{"tls.cert_file"}, text: []string{"required with tls.key_file"}},
		{name: "missing key file", tls: TLSConfig{Enabled: true, CertFile: pki.client, KeyFile: missing},
			want: []string{"tls.key_file"}, text: []string{missing}},
		{name: "missing cert and ca", tls: TLSConfig{Enabled: true, CAFile: missing, CertFile: missing, KeyFile: pki.ckey},
			want: []string{"tls.ca_file", "tls.cert_file"}},
		{name: "key of another certificate", tls: TLSConfig{Enabled: true, CertFile: pki.client, KeyFile: pki.serverKey},
			want: []string{"tls.cert_file"}, text: []string{pki.client, pki.serverKey}},
		{name: "scram-sha-512", sasl: SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "u", Password: testPassword}},
		{name: "scram-sha-256", sasl: SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "u", Password: testPassword}},
		{name: "plain over tls", tls: TLSConfig{Enabled: true},
			sasl: SASLConfig{Mechanism: "PLAIN", Username: "u", Password: testPassword}},
		{name: "unknown mechanism", sasl: SASLConfig{Mechanism: "GSSAPI", Username: "u", Password: testPassword},
			want: []string{"sasl.mechanism"}, text: []string{`"GSSAPI"`, "SCRAM-SHA-512"}},
		{name: "lower-case mechanism", sasl: SASLConfig{Mechanism: "plain", Username: "u", Password: testPassword},
			want: []string{"sasl.mechanism"}},
		{name: "no username or password", sasl: SASLConfig{Mechanism: "PLAIN"},
			want: []string{"sasl.password", "sasl.username"}},
		{name: "password without mechanism", sasl: SASLConfig{Password: testPassword},
			want: []string{"sasl.mechanism"}, text: []string{"must be set"}},
		{name: "username without mechanism", sasl: SASLConfig{Username: "u"}, want: []string{"sasl.mechanism"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.Topics = []string{"logs"}
			c.TLS, c.SASL = tt.tls, tt.sasl
			err := c.Validate()
			if got := problemPaths(t, err); !slices.Equal(got, tt.want) {
				t.Fatalf("Validate() reports %q, want %q; error: %v", got, tt.want, err)
			}
			for _, s := range tt.text {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if err != nil && strings.Contains(err.Error(), testPassword) {
				t.Errorf("error %q shows the password", err)
			}
			if err != nil {
				return
			}
			// A valid configuration builds.
			if _, err := c.tlsConfig(); err != nil {
				t.Errorf("tlsConfig() = %v", err)
			}
			if _, err := c.saslMechanism(); err != nil {
				t.Errorf("saslMechanism() = %v", err)
			}
		})
	}
}

func TestTLSConfig(t *testing.T) {
	pki := newTestPKI(t)
	tests := []struct {
		name  string
		tls   TLSConfig
		check func(t *testing.T, c *tls.Config)
	}{
		{"off", TLSConfig{}, func(t *testing.T, c *tls.Config) {
			if c != nil {
				t.Errorf("tlsConfig() = %+v, want nil", c)
			}
		}},
		{"system roots, verified", TLSConfig{Enabled: true}, func(t *testing.T, c *tls.Config) {
			if c.RootCAs != nil || c.InsecureSkipVerify || len(c.Certificates) != 0 || c.ServerName != "" {
				t.Errorf("tlsConfig() = %+v, want system roots, verification, no client certificate", c)
			}
			if c.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion = %x, want TLS 1.2", c.MinVersion)
			}
		}},
		{"ca file and client certificate", TLSConfig{Enabled: true, CAFile: pki.ca, CertFile: pki.client, KeyFile: pki.ckey},
			func(t *testing.T, c *tls.Config) {
				if c.RootCAs == nil || !c.RootCAs.Equal(pki.pool) {
					t.Error("RootCAs are not the CA file's")
				}
				if len(c.Certificates) != 1 {
					t.Fatalf("%d client certificates, want 1", len(c.Certificates))
				}
				leaf, err := x509.ParseCertificate(c.Certificates[0].Certificate[0])
				if err != nil || leaf.Subject.CommonName != "shipper" {
					t.Errorf("client certificate %v, %v; want CN shipper", leaf.Subject, err)
				}
			}},
		{"server name and insecure", TLSConfig{Enabled: true, ServerName: "kafka.example", InsecureSkipVerify: true},
			func(t *testing.T, c *tls.Config) {
				if c.ServerName != "kafka.example" || !c.InsecureSkipVerify {
					t.Errorf("tlsConfig() = %+v", c)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.TLS = tt.tls
			got, err := c.tlsConfig()
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, got)
		})
	}

	// The configuration verifies the server: a handshake with a server
	// presenting the CA's certificate succeeds, with a foreign CA it fails.
	other := newTestPKI(t)
	for _, tt := range []struct {
		name   string
		server tls.Certificate
		ok     bool
	}{{"our CA", pki.server, true}, {"another CA", other.server, false}} {
		t.Run("handshake with "+tt.name, func(t *testing.T) {
			c := DefaultConfig()
			c.TLS = TLSConfig{Enabled: true, CAFile: pki.ca, CertFile: pki.client, KeyFile: pki.ckey}
			cfg, err := c.tlsConfig()
			if err != nil {
				t.Fatal(err)
			}
			err = handshake(t, cfg, tt.server, pki.pool)
			if tt.ok && err != nil {
				t.Errorf("handshake: %v", err)
			}
			var verr *tls.CertificateVerificationError
			if !tt.ok && !errors.As(err, &verr) {
				t.Errorf("handshake error %v, want a certificate verification error", err)
			}
		})
	}
}

// handshake makes a TLS handshake with cfg against a server presenting
// cert and requiring a client certificate signed by clientCAs.
func handshake(t *testing.T, cfg *tls.Config, cert tls.Certificate, clientCAs *x509.CertPool) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if c, err := ln.Accept(); err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	defer func() { ln.Close(); wg.Wait() }()
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	conn, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err == nil {
		conn.Close()
	}
	return err
}

func TestSASLMechanism(t *testing.T) {
	tests := []struct {
		mechanism string
		want      string // Name() of the result; "" for none
	}{
		{"", ""},
		{"PLAIN", "PLAIN"},
		{"SCRAM-SHA-256", "SCRAM-SHA-256"},
		{"SCRAM-SHA-512", "SCRAM-SHA-512"},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		c.SASL = SASLConfig{Mechanism: tt.mechanism, Username: "shipper", Password: testPassword}
		if tt.mechanism == "" {
			c.SASL = SASLConfig{}
		}
		m, err := c.saslMechanism()
		if err != nil {
			t.Fatalf("%q: %v", tt.mechanism, err)
		}
		switch {
		case tt.want == "" && m != nil:
			t.Errorf("%q: got mechanism %s, want none", tt.mechanism, m.Name())
		case tt.want != "" && (m == nil || m.Name() != tt.want):
			t.Errorf("%q: got %v, want %s", tt.mechanism, m, tt.want)
		}
		if p, ok := m.(plain.Mechanism); ok && (p.Username != "shipper" || p.Password != testPassword) {
			t.Errorf("PLAIN mechanism %q/%q, want the configured user and password", p.Username, p.Password)
		}
	}
	c := DefaultConfig()
	c.SASL = SASLConfig{Mechanism: "OAUTHBEARER", Username: "u", Password: testPassword}
	if _, err := c.saslMechanism(); err == nil {
		t.Error("saslMechanism() accepted OAUTHBEARER")
	}
}

// TestPasswordNeverPrinted: the configuration, printed or logged whole,
// never shows the password.
func TestPasswordNeverPrinted(t *testing.T) {
	c := DefaultConfig()
	c.SASL = SASLConfig{Mechanism: "PLAIN", Username: "u", Password: testPassword}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "kafka", c)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("config", "kafka", c)
	c.securityWarnings(slog.New(slog.NewTextHandler(&buf, nil)))
	fmt.Fprintf(&buf, "%v %+v %#v %s", c, c, c, c.SASL.Password)
	if strings.Contains(buf.String(), testPassword) {
		t.Errorf("the password shows in:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "PLAIN without tls") {
		t.Errorf("no warning about PLAIN without TLS in:\n%s", buf.String())
	}
}

func TestInsecureSkipVerifyWarns(t *testing.T) {
	for _, tt := range []struct {
		tls  TLSConfig
		warn bool
	}{
		{TLSConfig{Enabled: true, InsecureSkipVerify: true}, true},
		{TLSConfig{Enabled: true}, false},
	} {
		c := DefaultConfig()
		c.Topics = []string{"logs"}
		c.TLS = tt.tls
		var buf bytes.Buffer
		if _, err := New(c, kafkatest.NewSink(), kafkatest.NewWatermarks(nil), slog.New(slog.NewTextHandler(&buf, nil))); err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(buf.String(), "level=WARN") && strings.Contains(buf.String(), "insecure_skip_verify"); got != tt.warn {
			t.Errorf("%+v: warned %v, want %v; log:\n%s", tt.tls, got, tt.warn, buf.String())
		}
	}
}

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// runInput runs an input on cfg until the test ends and returns it, its
// sink and its log.
func runInput(t *testing.T, cfg Config) (*Input, *kafkatest.Sink, *lockedBuffer) {
	t.Helper()
	cfg.CommitInterval = 50 * time.Millisecond
	cfg.SessionTimeout = 6 * time.Second
	cfg.HeartbeatInterval = time.Second
	cfg.RebalanceTimeout = 5 * time.Second
	cfg.FetchMaxWait = 100 * time.Millisecond
	cfg.DialTimeout = 5 * time.Second
	logs := &lockedBuffer{}
	sink := kafkatest.NewSink()
	in, err := New(cfg, sink, kafkatest.NewWatermarks(nil), slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return within 10s of its context's end")
		}
		if t.Failed() {
			t.Logf("input log:\n%s", logs)
		}
	})
	return in, sink, logs
}

// waitUntil polls cond for up to 20s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestInputOverSASLAndTLS runs the input against an in-process cluster
// that requires SASL, or TLS with a client certificate: with the right
// settings it joins and consumes; with a wrong password or without the CA
// it reports why on Problem (authentication, certificate), logs an error
// saying what to check, never the password, and consumes nothing.
func TestInputOverSASLAndTLS(t *testing.T) {
	pki := newTestPKI(t)
	const topic = "logs"
	tests := []struct {
		name     string
		cluster  []kfake.Opt
		produce  []kgo.Opt
		tls      TLSConfig
		sasl     SASLConfig
		problem  string // "" when the input must consume
		logCheck string
	}{
		{name: "scram-sha-512",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "shipper", testPassword)},
			produce: []kgo.Opt{kgo.SASL(scram.Auth{User: "shipper", Pass: testPassword}.AsSha512Mechanism())},
			sasl:    SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "shipper", Password: testPassword}},
		{name: "scram-sha-256",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "shipper", testPassword)},
			produce: []kgo.Opt{kgo.SASL(scram.Auth{User: "shipper", Pass: testPassword}.AsSha256Mechanism())},
			sasl:    SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "shipper", Password: testPassword}},
		{name: "plain over tls",
			cluster: []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("PLAIN", "shipper", testPassword),
				kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pki.server}})},
			produce: []kgo.Opt{kgo.SASL(plainsasl.Auth{User: "shipper", Pass: testPassword}.AsMechanism()),
				kgo.DialTLSConfig(&tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1"})},
			tls:  TLSConfig{Enabled: true, CAFile: pki.ca},
			sasl: SASLConfig{Mechanism: "PLAIN", Username: "shipper", Password: testPassword}},
		{name: "wrong password",
			cluster:  []kfake.Opt{kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "shipper", testPassword)},
			produce:  []kgo.Opt{kgo.SASL(scram.Auth{User: "shipper", Pass: testPassword}.AsSha512Mechanism())},
			sasl:     SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "shipper", Password: "wrong-" + testPassword},
			problem:  "authentication",
			logCheck: "check the sasl username, password and mechanism"},
		{name: "tls with client certificate",
			cluster: []kfake.Opt{kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pki.server},
				ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pki.pool})},
			produce: []kgo.Opt{kgo.DialTLSConfig(&tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1",
				Certificates: []tls.Certificate{mustKeyPair(t, pki.client, pki.ckey)}})},
			tls: TLSConfig{Enabled: true, CAFile: pki.ca, CertFile: pki.client, KeyFile: pki.ckey}},
		{name: "tls without the CA",
			cluster:  []kfake.Opt{kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pki.server}})},
			produce:  []kgo.Opt{kgo.DialTLSConfig(&tls.Config{RootCAs: pki.pool, ServerName: "127.0.0.1"})},
			tls:      TLSConfig{Enabled: true},
			problem:  "certificate",
			logCheck: "check tls ca_file and server_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kf, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(2, topic)}, tt.cluster...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer kf.Close()
			producer, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(kf.ListenAddrs()...),
				kgo.RecordPartitioner(kgo.RoundRobinPartitioner())}, tt.produce...)...)
			if err != nil {
				t.Fatal(err)
			}
			defer producer.Close()
			const n = 20
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for i := range n {
				if err := producer.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "r%d", i)}).FirstErr(); err != nil {
					t.Fatalf("produce: %v", err)
				}
			}

			cfg := DefaultConfig()
			cfg.Brokers, cfg.Topics, cfg.GroupID = kf.ListenAddrs(), []string{topic}, "g"
			cfg.TLS, cfg.SASL = tt.tls, tt.sasl
			in, sink, logs := runInput(t, cfg)
			if tt.problem == "" {
				waitUntil(t, "every record consumed", func() bool { return len(sink.Records()) == n })
				if err := in.Problem(); err != nil {
					t.Errorf("Problem() = %v after consuming, want nil", err)
				}
				return
			}
			waitUntil(t, "Problem() reports "+tt.problem, func() bool {
				return in.Problem() != nil && strings.Contains(in.Problem().Error(), tt.problem)
			})
			time.Sleep(500 * time.Millisecond)
			if got := len(sink.Records()); got != 0 || in.Joined() {
				t.Errorf("%d records consumed, joined %v; want none, not joined", got, in.Joined())
			}
			log := logs.String()
			if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, tt.logCheck) {
				t.Errorf("no error saying %q in the log:\n%s", tt.logCheck, log)
			}
			if strings.Contains(log, testPassword) || strings.Contains(in.Problem().Error(), testPassword) {
				t.Errorf("the password shows in the log or the problem")
			}
		})
	}
}

func mustKeyPair(t *testing.T, cert, key string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestSecurityBlocksDecode decodes the tls and sasl blocks as the agent
// does, the commented examples of config.example.hcl included (so they
// stay valid), with the password from env(), and places a file problem at
// its attribute.
func TestSecurityBlocksDecode(t *testing.T) {
	example, err := os.ReadFile("../../config.example.hcl")
	if err != nil {
		t.Fatal(err)
	}
	// The commented blocks at the end of the kafka block, uncommented.
	var blocks []string
	in, inKafka := false, false
	for _, line := range strings.Split(string(example), "\n") {
		switch line {
		case "kafka {":
			inKafka = true
		case "}":
			inKafka = false
		}
		switch {
		case !inKafka:
			continue
		case line == "  # tls {" || line == "  # sasl {":
			in = true
		case !in:
			continue
		}
		blocks = append(blocks, strings.TrimPrefix(line, "  # "))
		if line == "  # }" {
			in = false
		}
	}
	if len(blocks) == 0 {
		t.Fatal("config.example.hcl has no commented tls or sasl block in its kafka block")
	}
	env := map[string]string{"KAFKA_PASSWORD": testPassword}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	decode := func(src string) (Config, *hcldecode.Positions) {
		t.Helper()
		body, _, diags := hcldecode.ParseFile("kafka.hcl", []byte(src))
		c := DefaultConfig()
		pos, d := hcldecode.Decode(body, hcldecode.EvalContextWith(lookup), &c)
		if diags = append(diags, d...); diags.HasErrors() {
			t.Fatalf("decode:\n%s\n%v", src, diags)
		}
		return c, pos
	}

	c, _ := decode(strings.Join(blocks, "\n"))
	wantTLS := TLSConfig{Enabled: true, CAFile: "/etc/shipper/kafka-ca.pem", CertFile: "/etc/shipper/kafka-client.pem",
		KeyFile: "/etc/shipper/kafka-client-key.pem", ServerName: "kafka.internal"}
	if c.TLS != wantTLS {
		t.Errorf("example tls block decodes to %+v, want %+v", c.TLS, wantTLS)
	}
	if want := (SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "shipper", Password: testPassword}); c.SASL != want {
		t.Errorf("example sasl block decodes to %+v, want %+v", c.SASL, want)
	}

	// No blocks: no TLS, no SASL.
	if c, _ := decode(`topics = ["logs"]`); c.TLS != (TLSConfig{}) || c.SASL != (SASLConfig{}) {
		t.Errorf("without blocks: tls %+v, sasl %+v; want both off", c.TLS, c.SASL)
	}

	c, pos := decode("topics = [\"logs\"]\ntls {\n  enabled = true\n  ca_file = \"/nonexistent/ca.pem\"\n}\n")
	diags := pos.Diagnostics(c.Validate())
	if len(diags) != 1 || diags[0].Subject == nil || diags[0].Subject.Start.Line != 4 ||
		!strings.Contains(diags[0].Error(), "/nonexistent/ca.pem") {
		t.Errorf("a missing ca_file gives %v, want one problem at kafka.hcl:4 naming the file", diags)
	}
}
