package elasticsearch

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

// logBuffer collects an output's log lines for a test to read.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// requireNotLogged fails the test if any secret appears in the log.
func (l *logBuffer) requireNotLogged(t *testing.T, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(l.String(), s) {
			t.Errorf("the log shows the secret %q:\n%s", s, l.String())
		}
	}
}

// writeFile writes a test file and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testOutput is an output with one node at url, closed with the test.
func testOutput(t *testing.T, url string, log *slog.Logger, mutate func(*Config)) *Output {
	t.Helper()
	cfg := DefaultConfig()
	cfg.URLs = []string{url}
	cfg.Index = "test"
	cfg.RequestTimeout = 5 * time.Second
	cfg.HedgeAfter = 0
	if mutate != nil {
		mutate(&cfg)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// trusting returns a mutate function that trusts srv's certificate.
func trusting(t *testing.T, srv *estest.Server, then func(*Config)) func(*Config) {
	ca := writeFile(t, t.TempDir(), "ca.pem", string(srv.CertificatePEM()))
	return func(c *Config) {
		c.TLS.CAFile = ca
		if then != nil {
			then(c)
		}
	}
}

func testRecords(n int) []*shipper.Record {
	out := make([]*shipper.Record, n)
	for i := range out {
		out[i] = &shipper.Record{Topic: "t", Partition: 0, Offset: int64(i), Value: []byte(`{"n":1}`), Time: time.Unix(1e9, 0)}
	}
	return out
}

func basic(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}

// TestCredentialsOnEveryRequest: each scheme sets the Authorization header
// of the start-up check, of bulk requests and of the pool's probes, over
// TLS; no secret reaches the log.
func TestCredentialsOnEveryRequest(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		cfg    func(*Config)
		want   string // the header sent; "" for none
		secret string
	}{
		{"none", func(c *Config) {}, "", ""},
		{"basic", func(c *Config) { c.Username, c.Password = "elastic", "pw-Secret-1" }, basic("elastic", "pw-Secret-1"), "pw-Secret-1"},
		{"basic from a file", func(c *Config) {
			c.Username, c.PasswordFile = "elastic", writeFile(t, dir, "password", "pw-Secret-2\n")
		}, basic("elastic", "pw-Secret-2"), "pw-Secret-2"},
		{"api key encoded", func(c *Config) { c.APIKey = "aWQ6a2V5LVNlY3JldC0z" }, "ApiKey aWQ6a2V5LVNlY3JldC0z", "aWQ6a2V5LVNlY3JldC0z"},
		{"api key as id:key", func(c *Config) { c.APIKey = "id:key-Secret-4" },
			"ApiKey " + base64.StdEncoding.EncodeToString([]byte("id:key-Secret-4")), "key-Secret-4"},
		{"api key from a file", func(c *Config) { c.APIKeyFile = writeFile(t, dir, "api-key", "aWQ6a2V5LVNlY3JldC01\n") },
			"ApiKey aWQ6a2V5LVNlY3JldC01", "aWQ6a2V5LVNlY3JldC01"},
		{"bearer", func(c *Config) { c.BearerToken = "tok-Secret-6" }, "Bearer tok-Secret-6", "tok-Secret-6"},
		{"bearer from a file with CRLF", func(c *Config) { c.BearerTokenFile = writeFile(t, dir, "token", "tok-Secret-7\r\n") },
			"Bearer tok-Secret-7", "tok-Secret-7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := estest.NewTLS(t, nil)
			var mu sync.Mutex
			var seen []string
			srv.OnAuth(func(h string) bool {
				mu.Lock()
				seen = append(seen, h)
				mu.Unlock()
				return h == tt.want
			})
			var log logBuffer
			o := testOutput(t, srv.URL, log.logger(), trusting(t, srv, tt.cfg))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := o.Check(ctx); err != nil {
				t.Fatalf("Check: %v", err)
			}
			res, err := o.Send(ctx, testRecords(3))
			if err != nil {
				t.Fatalf("Send: %v", err)
			}
			for i, r := range res {
				if r.Outcome != Delivered {
					t.Errorf("record %d: %+v", i, r)
				}
			}
			if err := o.pool.fullProbe(o.pool.nodes[0]); err != nil {
				t.Fatalf("probe: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 3 { // check, bulk, probe
				t.Fatalf("%d requests seen, want 3", len(seen))
			}
			for i, h := range seen {
				if h != tt.want {
					t.Errorf("request %d (check, bulk, probe): Authorization %q, want %q", i, h, tt.want)
				}
			}
			log.requireNotLogged(t, tt.secret)
		})
	}
}

// TestCredentialFileRotated: delivery with a wrong password from a file is
// held (401); once the file holds the right one, the next request sends
// it, without a restart.
func TestCredentialFileRotated(t *testing.T) {
	const wrong, right = "wrong-Secret-8", "right-Secret-9"
	srv := estest.NewTLS(t, nil)
	srv.OnAuth(func(h string) bool { return h == basic("elastic", right) })
	file := writeFile(t, t.TempDir(), "password", wrong+"\n")
	var log logBuffer
	o := testOutput(t, srv.URL, log.logger(), trusting(t, srv, func(c *Config) { c.Username, c.PasswordFile = "elastic", file }))
	o.pool.auth.file.every = 0 // check the file at every request
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	if _, err := o.Check(ctx); !errors.Is(err, ErrCredentials) {
		t.Fatalf("Check with the wrong password: %v, want ErrCredentials", err)
	}
	res, err := o.Send(ctx, testRecords(2))
	var re *RequestError
	if !errors.As(err, &re) || re.Status != 401 || !re.Hold {
		t.Fatalf("Send with the wrong password: %v, want a held 401", err)
	}
	for i, r := range res {
		if r.Outcome != Hold {
			t.Errorf("record %d: %+v, want Hold", i, r)
		}
	}

	if err := os.WriteFile(file, []byte(right+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = o.Send(ctx, testRecords(2))
	if err != nil {
		t.Fatalf("Send after the password file was fixed: %v", err)
	}
	for i, r := range res {
		if r.Outcome != Delivered {
			t.Errorf("record %d after the fix: %+v", i, r)
		}
	}
	if !strings.Contains(log.String(), "credential file changed") {
		t.Errorf("the change was not logged:\n%s", log.String())
	}
	log.requireNotLogged(t, wrong, right)
}

// TestSecretFileChanges: a secret file is read again when it is rewritten
// in place and when Kubernetes swaps its ..data link; a file that vanishes
// or turns empty keeps the last value, logged once; a check happens at most
// once per interval.
func TestSecretFileChanges(t *testing.T) {
	dir := t.TempDir()
	// The layout of a Kubernetes secret volume: password -> ..data/password,
	// ..data -> ..<timestamp>, swapped by renaming a new link over ..data.
	version := func(name, content string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		file := writeFile(t, filepath.Join(dir, name), "password", content)
		// Every version with the same modification time: the file's
		// identity (inode, change time) must tell them apart too.
		if err := os.Chtimes(file, time.Time{}, time.Unix(1e9, 0)); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2026_01_01", "one-Secret\n")
	path := filepath.Join(dir, "password")
	if err := os.Symlink(filepath.Join("..data", "password"), path); err != nil {
		t.Fatal(err)
	}
	var log logBuffer
	f, err := newSecretFile("password_file", path, log.logger())
	if err != nil {
		t.Fatal(err)
	}
	f.every = 0
	want := func(step, v string) {
		t.Helper()
		if got := f.current(); got != v {
			t.Fatalf("%s: current() = %q, want %q", step, got, v)
		}
	}
	want("first read", "one-Secret")

	version("..2026_01_02", "two-Secret\n") // the same size and modification time
	want("after the ..data swap", "two-Secret")

	// In place, as an editor or `echo >` does.
	writeFile(t, filepath.Join(dir, "..2026_01_02"), "password", "three-Secret")
	want("rewritten in place", "three-Secret")

	if err := os.Remove(filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		want("while the file is gone", "three-Secret")
	}
	version("..2026_01_03", "\n")
	want("while the file is empty", "three-Secret")
	if n := strings.Count(log.String(), "cannot be read"); n != 1 {
		t.Errorf("%d warnings about the unreadable file, want 1:\n%s", n, log.String())
	}

	version("..2026_01_04", "four-Secret\n")
	want("fixed", "four-Secret")

	// At most one check per interval: a change is seen at the next one.
	f.every = time.Hour
	f.checked.Store(time.Now().UnixNano())
	version("..2026_01_05", "five-Secret\n")
	want("within the interval", "four-Secret")
	f.checked.Store(time.Now().Add(-time.Hour).UnixNano())
	want("once the interval passed", "five-Secret")

	log.requireNotLogged(t, "one-Secret", "two-Secret", "three-Secret", "four-Secret", "five-Secret")
}

// testPKI is a CA and two client certificates it signed, as PEM files.
type testPKI struct {
	dir         string
	ca          string // the CA's certificate file
	otherCA     string // a CA that signed nothing here
	pool        *x509.CertPool
	certA, keyA string
	certB, keyB string
	derA, derB  []byte
	caCert      *x509.Certificate
	caKey       *ecdsa.PrivateKey
	serial      int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), pool: x509.NewCertPool()}
	now := time.Now()
	var caDER []byte
	caDER, p.caKey = p.create(t, &x509.Certificate{Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, nil, nil)
	p.caCert, _ = x509.ParseCertificate(caDER)
	p.pool.AddCert(p.caCert)
	p.ca = writeFile(t, p.dir, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})))
	otherDER, _ := p.create(t, &x509.Certificate{Subject: pkix.Name{CommonName: "other CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}, nil, nil)
	p.otherCA = writeFile(t, p.dir, "other-ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: otherDER})))
	p.certA, p.keyA, p.derA = p.client(t, "a")
	p.certB, p.keyB, p.derB = p.client(t, "b")
	return p
}

// create makes a certificate signed by parent's key (self-signed when
// parent is nil) and returns its DER and its own key.
func (p *testPKI) create(t *testing.T, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl.SerialNumber = big.NewInt(p.serial)
	if parent == nil {
		parent, parentKey = tmpl, k
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, k
}

// client makes a client certificate named cn; it returns the paths of its
// certificate and key files, and its DER.
func (p *testPKI) client(t *testing.T, cn string) (cert, key string, der []byte) {
	t.Helper()
	now := time.Now()
	der, k := p.create(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, p.caCert, p.caKey)
	kb, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert = writeFile(t, p.dir, cn+".pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	key = writeFile(t, p.dir, cn+"-key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})))
	return cert, key, der
}

// TestClientCertificateReloaded: the client certificate presented is the
// one the files hold now; a pair that does not match (half-way through a
// rotation) keeps the last good one, with one warning.
func TestClientCertificateReloaded(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	cp := func(from, to string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cp(pki.certA, cert)
	cp(pki.keyA, key)
	cfg := DefaultConfig()
	cfg.URLs = []string{"https://127.0.0.1:9200"}
	cfg.TLS = TLSConfig{CAFile: pki.ca, CertFile: cert, KeyFile: key}
	var log logBuffer
	tc, err := cfg.clientTLS(log.logger())
	if err != nil {
		t.Fatal(err)
	}
	if tc.GetClientCertificate == nil || len(tc.Certificates) != 0 {
		t.Fatal("the client certificate is not read through GetClientCertificate")
	}
	presented := func(get func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) []byte {
		t.Helper()
		c, err := get(&tls.CertificateRequestInfo{})
		if err != nil || c == nil || len(c.Certificate) == 0 {
			t.Fatalf("GetClientCertificate: %v, %v", c, err)
		}
		return c.Certificate[0]
	}
	if !bytes.Equal(presented(tc.GetClientCertificate), pki.derA) {
		t.Fatal("not certificate a at start")
	}
	// Rotated: within the check interval the old one is still presented.
	cp(pki.certB, cert)
	cp(pki.keyB, key)
	if !bytes.Equal(presented(tc.GetClientCertificate), pki.derA) {
		t.Fatal("the files were read again within a second")
	}

	// From here a loader that checks at every handshake.
	first, err := tls.LoadX509KeyPair(pki.certA, pki.keyA)
	if err != nil {
		t.Fatal(err)
	}
	cp(pki.certA, cert)
	cp(pki.keyA, key)
	cc := newClientCert(cert, key, first, log.logger())
	cc.every = 0
	cp(pki.certB, cert)
	cp(pki.keyB, key)
	if !bytes.Equal(presented(cc.get), pki.derB) {
		t.Fatal("certificate b not presented after the rotation")
	}
	// Half-way through the next rotation: a's certificate with b's key.
	cp(pki.certA, cert)
	for range 3 {
		if !bytes.Equal(presented(cc.get), pki.derB) {
			t.Fatal("a mismatched pair replaced the last good certificate")
		}
	}
	if n := strings.Count(log.String(), "cannot be loaded"); n != 1 {
		t.Errorf("%d warnings about the mismatched pair, want 1:\n%s", n, log.String())
	}
	cp(pki.keyA, key)
	if !bytes.Equal(presented(cc.get), pki.derA) {
		t.Fatal("certificate a not presented once the pair matched")
	}
}

func TestValidateSecurity(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", "file-Secret-1\n")
	empty := writeFile(t, dir, "empty", "\n")
	twoLines := writeFile(t, dir, "two-lines", "file-Secret-2\nmore\n")
	large := writeFile(t, dir, "large", strings.Repeat("x", maxSecretBytes+1))
	missing := filepath.Join(dir, "missing")
	const inline = "inline-Secret-3"
	https := []string{"https://127.0.0.1:9200"}
	tests := []struct {
		name string
		cfg  func(*Config)
		want []string // setting paths reported, sorted
		text []string // in the error message
	}{
		{"none", func(c *Config) {}, nil, nil},
		{"basic", func(c *Config) { c.Username, c.Password = "u", inline }, nil, nil},
		{"basic from a file", func(c *Config) { c.Username, c.PasswordFile = "u", pw }, nil, nil},
		{"api key file", func(c *Config) { c.APIKeyFile = pw }, nil, nil},
		{"bearer token", func(c *Config) { c.BearerToken = inline }, nil, nil},
		{"basic and api key", func(c *Config) { c.Username, c.Password, c.APIKey = "u", inline, inline },
			[]string{"api_key"}, []string{"one way to authenticate", "username/password and api_key"}},
		{"api key and bearer file", func(c *Config) { c.APIKey, c.BearerTokenFile = inline, pw },
			[]string{"bearer_token_file"}, []string{"api_key and bearer_token_file"}},
		{"password twice", func(c *Config) { c.Username, c.Password, c.PasswordFile = "u", inline, pw },
			[]string{"password_file"}, []string{"not both"}},
		{"bearer twice", func(c *Config) { c.BearerToken, c.BearerTokenFile = inline, pw },
			[]string{"bearer_token_file"}, []string{"not both"}},
		{"username alone", func(c *Config) { c.Username = "u" }, []string{"password"}, []string{"password_file"}},
		{"password alone", func(c *Config) { c.Password = inline }, []string{"username"}, []string{"required with password"}},
		{"username with a colon", func(c *Config) { c.Username, c.Password = "a:b", inline }, []string{"username"}, []string{"colon"}},
		{"missing file", func(c *Config) { c.APIKeyFile = missing }, []string{"api_key_file"}, []string{missing, "no such file"}},
		{"empty file", func(c *Config) { c.BearerTokenFile = empty }, []string{"bearer_token_file"}, []string{empty, "is empty"}},
		{"two lines", func(c *Config) { c.Username, c.PasswordFile = "u", twoLines }, []string{"password_file"}, []string{"control character"}},
		{"large file", func(c *Config) { c.APIKeyFile = large }, []string{"api_key_file"}, []string{"not a credential"}},
		{"line break inline", func(c *Config) { c.APIKey = "a\nb" }, []string{"api_key"}, []string{"control character"}},
		{"tls with https", func(c *Config) {
			c.URLs, c.TLS = https, TLSConfig{CAFile: pki.ca, CertFile: pki.certA, KeyFile: pki.keyA, ServerName: "es"}
		}, nil, nil},
		{"https without a tls block", func(c *Config) { c.URLs = https }, nil, nil},
		{"tls with http only", func(c *Config) { c.TLS.CAFile = pki.ca }, []string{"tls"}, []string{"https://"}},
		{"insecure with http only", func(c *Config) { c.TLS.InsecureSkipVerify = true }, []string{"tls"}, nil},
		{"missing ca", func(c *Config) { c.URLs, c.TLS.CAFile = https, missing }, []string{"tls.ca_file"}, []string{missing}},
		{"ca without a certificate", func(c *Config) { c.URLs, c.TLS.CAFile = https, pw }, []string{"tls.ca_file"}, []string{"no PEM certificate"}},
		{"cert without key", func(c *Config) { c.URLs, c.TLS.CertFile = https, pki.certA }, []string{"tls.key_file"}, nil},
		{"key without cert", func(c *Config) { c.URLs, c.TLS.KeyFile = https, pki.keyA }, []string{"tls.cert_file"}, nil},
		{"key of another certificate", func(c *Config) { c.URLs, c.TLS.CertFile, c.TLS.KeyFile = https, pki.certA, pki.keyB },
			[]string{"tls.cert_file"}, []string{pki.certA, pki.keyB}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.cfg(&c)
			err := c.Validate()
			var paths []string
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var fe *shipper.FieldError
					if !errors.As(e, &fe) {
						t.Fatalf("%v is not a *shipper.FieldError", e)
					}
					paths = append(paths, fe.Path)
				}
			}
			slices.Sort(paths)
			if !slices.Equal(paths, tt.want) {
				t.Fatalf("Validate() reports %q, want %q: %v", paths, tt.want, err)
			}
			for _, s := range tt.text {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%q does not say %q", err, s)
				}
			}
			for _, s := range []string{inline, "file-Secret"} {
				if err != nil && strings.Contains(err.Error(), s) {
					t.Errorf("%q shows a secret", err)
				}
			}
			if err == nil {
				o, err := New(c, nil)
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				o.Close()
			}
		})
	}
}
