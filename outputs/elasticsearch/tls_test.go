package elasticsearch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shipper-agent/shipper/internal/hcldecode"
	"github.com/shipper-agent/shipper/outputs/elasticsearch/estest"
)

// TestTLS: bulk requests and the start-up check verify the node's
// certificate as configured. A certificate that does not verify fails
// with an error-level line saying which setting to check, the node is
// marked dead (and stays so: its probes fail the same way), and Problem
// says why nothing can be delivered; nothing is indexed.
func TestTLS(t *testing.T) {
	pki := newTestPKI(t)
	requireClientCert := func(c *tls.Config) {
		c.ClientAuth, c.ClientCAs = tls.RequireAndVerifyClientCert, pki.pool
	}
	tests := []struct {
		name      string
		server    func(*tls.Config)
		cfg       func(*Config)
		trustNode bool   // ca_file is the node's certificate
		fails     string // "" to deliver; else what the error line and Problem say
		setting   string // the setting they name
	}{
		{name: "the node's CA", trustNode: true},
		{name: "the system's roots", fails: "not trusted", setting: "elasticsearch.tls.ca_file"},
		{name: "another CA", cfg: func(c *Config) { c.TLS.CAFile = pki.otherCA },
			fails: "not trusted", setting: "elasticsearch.tls.ca_file"},
		{name: "another name", trustNode: true, cfg: func(c *Config) { c.TLS.ServerName = "elsewhere.example" },
			fails: "not valid for the name", setting: "elasticsearch.tls.server_name"},
		{name: "the node's name", trustNode: true, cfg: func(c *Config) { c.TLS.ServerName = "example.com" }},
		{name: "insecure", cfg: func(c *Config) { c.TLS.InsecureSkipVerify = true }},
		{name: "client certificate", trustNode: true, server: requireClientCert,
			cfg: func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = pki.certA, pki.keyA }},
		{name: "no client certificate", trustNode: true, server: requireClientCert,
			fails: "client certificate", setting: "elasticsearch.tls.cert_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := estest.NewTLS(t, tt.server)
			var log logBuffer
			mutate := func(c *Config) {
				c.ProbeInterval = 50 * time.Millisecond
				c.ResurrectMax = 100 * time.Millisecond
				if tt.cfg != nil {
					tt.cfg(c)
				}
			}
			if tt.trustNode {
				mutate = trusting(t, srv, mutate)
			}
			o := testOutput(t, srv.URL, log.logger(), mutate)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, checkErr := o.Check(ctx)
			res, err := o.Send(ctx, testRecords(2))
			if tt.fails == "" {
				if checkErr != nil || err != nil {
					t.Fatalf("Check: %v; Send: %v", checkErr, err)
				}
				if res[0].Outcome != Delivered || o.Problem() != nil {
					t.Fatalf("results %+v, problem %v", res, o.Problem())
				}
				return
			}
			if !errors.Is(checkErr, ErrTLS) || !strings.Contains(checkErr.Error(), tt.setting) {
				t.Errorf("Check: %v, want ErrTLS naming %s", checkErr, tt.setting)
			}
			if err == nil || res[0].Outcome != Retry {
				t.Fatalf("Send: %v, results %+v: want a failed request", err, res)
			}
			if n := len(srv.Docs("test")); n != 0 {
				t.Errorf("%d documents indexed", n)
			}
			line := ""
			for _, l := range strings.Split(log.String(), "\n") {
				if strings.Contains(l, "level=ERROR") && strings.Contains(l, tt.fails) {
					line = l
				}
			}
			if !strings.Contains(line, tt.setting) {
				t.Errorf("no error line saying %q and naming %s:\n%s", tt.fails, tt.setting, log.String())
			}
			nodes, _ := o.Nodes()
			if nodes[0].State != "dead" || !strings.Contains(nodes[0].Reason, tt.fails) {
				t.Errorf("node %+v: want dead on %q", nodes[0], tt.fails)
			}
			// The probes meet the same certificate: it stays dead, and
			// Problem says why.
			time.Sleep(300 * time.Millisecond)
			_, stats := o.Nodes()
			if stats.Probes["full_failed"] == 0 {
				t.Errorf("no failed full probe in 300ms: %+v", stats.Probes)
			}
			p := o.Problem()
			if !errors.Is(p, ErrTLS) || !strings.Contains(p.Error(), tt.setting) {
				t.Errorf("Problem() = %v, want ErrTLS naming %s", p, tt.setting)
			}
		})
	}
}

// TestTLSNotCertificateProblems: a node that does not speak TLS, or does
// not answer, is an outage, not a certificate problem: Problem stays nil.
func TestTLSNotCertificateProblems(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer plain.Close()
	var log logBuffer
	o := testOutput(t, strings.Replace(plain.URL, "http://", "https://", 1), log.logger(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := o.Send(ctx, testRecords(1)); err == nil {
		t.Fatal("Send to an http:// node as https:// succeeded")
	}
	nodes, _ := o.Nodes()
	if nodes[0].State != "dead" || !strings.Contains(nodes[0].Reason, "did not answer with TLS") {
		t.Errorf("node %+v", nodes[0])
	}
	if p := o.Problem(); p != nil {
		t.Errorf("Problem() = %v for a node that does not speak TLS", p)
	}
}

// TestSecurityWarnings: insecure_skip_verify and credentials over http://
// are logged once at start, without the secret.
func TestSecurityWarnings(t *testing.T) {
	const secret = "warn-Secret-1"
	tests := []struct {
		name string
		cfg  func(*Config)
		want []string
		not  []string
	}{
		{"insecure", func(c *Config) { c.URLs, c.TLS.InsecureSkipVerify = []string{"https://127.0.0.1:1"}, true },
			[]string{"level=WARN", "insecure_skip_verify"}, []string{"clear text"}},
		{"password over http", func(c *Config) { c.Username, c.Password = "u", secret },
			[]string{"level=WARN", "clear text", "elasticsearch.password"}, []string{"insecure"}},
		{"api key over https", func(c *Config) { c.URLs, c.APIKey = []string{"https://127.0.0.1:1"}, secret },
			nil, []string{"clear text", "insecure"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log logBuffer
			testOutput(t, "http://127.0.0.1:1", log.logger(), func(c *Config) { tt.cfg(c) })
			for _, w := range tt.want {
				if !strings.Contains(log.String(), w) {
					t.Errorf("the log does not say %q:\n%s", w, log.String())
				}
			}
			for _, w := range tt.not {
				if strings.Contains(log.String(), w) {
					t.Errorf("the log says %q:\n%s", w, log.String())
				}
			}
			log.requireNotLogged(t, secret)
		})
	}
}

// TestExampleSecurityDecodes decodes the elasticsearch block's commented
// credential files and tls block of config.example.hcl as the agent does
// (so they stay valid), and places a file problem at its attribute.
func TestExampleSecurityDecodes(t *testing.T) {
	example, err := os.ReadFile("../../config.example.hcl")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	in, inES := false, false
	for _, line := range strings.Split(string(example), "\n") {
		switch line {
		case "elasticsearch {":
			inES = true
		case "}":
			inES = false
		}
		switch {
		case !inES:
			continue
		case line == "  # tls {", strings.HasPrefix(line, "  # password_file"):
			in = true
		}
		if in {
			lines = append(lines, strings.TrimPrefix(line, "  # "))
		}
		if line == "  # }" || strings.HasPrefix(line, "  # password_file") {
			in = false
		}
	}
	if len(lines) == 0 {
		t.Fatal("config.example.hcl has no commented tls block or password_file in its elasticsearch block")
	}
	decode := func(src string) (Config, *hcldecode.Positions) {
		t.Helper()
		body, _, diags := hcldecode.ParseFile("es.hcl", []byte(src))
		c := DefaultConfig()
		pos, d := hcldecode.Decode(body, hcldecode.EvalContext(), &c)
		if diags = append(diags, d...); diags.HasErrors() {
			t.Fatalf("decode:\n%s\n%v", src, diags)
		}
		return c, pos
	}
	c, _ := decode(strings.Join(lines, "\n"))
	want := TLSConfig{CAFile: "/etc/shipper/es/ca.pem", CertFile: "/etc/shipper/es/tls.crt", KeyFile: "/etc/shipper/es/tls.key",
		ServerName: "es.internal"}
	if c.TLS != want || c.PasswordFile != "/etc/shipper/es/password" {
		t.Errorf("the example decodes to tls %+v, password_file %q; want %+v", c.TLS, c.PasswordFile, want)
	}

	c, pos := decode("urls = [\"https://es:9200\"]\ntls {\n  ca_file = \"/nonexistent/ca.pem\"\n}\n")
	diags := pos.Diagnostics(c.Validate())
	if len(diags) != 1 || diags[0].Subject == nil || diags[0].Subject.Start.Line != 3 ||
		!strings.Contains(diags[0].Error(), "/nonexistent/ca.pem") {
		t.Errorf("a missing ca_file gives %v, want one problem at es.hcl:3 naming the file", diags)
	}
}

func TestTLSProblem(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("Post \"https://es:9200/_bulk\": %w", err) }
	tests := []struct {
		err     error
		want    string // in the problem; "" for no TLS problem
		setting string
		cert    bool
	}{
		{wrap(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), "not trusted", "elasticsearch.tls.ca_file", true},
		{wrap(x509.HostnameError{Certificate: &x509.Certificate{}, Host: "es"}), "not valid for the name", "elasticsearch.tls.server_name", true},
		{wrap(x509.CertificateInvalidError{Reason: x509.Expired}), "not valid", "elasticsearch.tls.ca_file", true},
		{wrap(errors.New("remote error: tls: certificate required")), "client certificate", "elasticsearch.tls.cert_file", true},
		{wrap(errors.New("remote error: tls: bad certificate")), "client certificate", "elasticsearch.tls.cert_file", true},
		{wrap(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}), "did not answer with TLS", "", false},
		{wrap(errors.New("net/http: TLS handshake timeout")), "tls_handshake_timeout", "", false},
		{wrap(errors.New("dial tcp 127.0.0.1:9200: connect: connection refused")), "", "", false},
	}
	for _, tt := range tests {
		problem, cert := tlsProblem(tt.err)
		if tt.want == "" {
			if problem != "" {
				t.Errorf("%v: problem %q, want none", tt.err, problem)
			}
			continue
		}
		if !strings.Contains(problem, tt.want) || !strings.Contains(problem, tt.setting) || cert != tt.cert {
			t.Errorf("%v: problem %q (cert %v), want %q naming %q (cert %v)", tt.err, problem, cert, tt.want, tt.setting, tt.cert)
		}
	}
}
