package elasticsearch

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/internal/tlsconfig"
)

// TLSConfig is the elasticsearch block's tls block: how HTTPS to the nodes
// is done. The URLs decide whether TLS is used (https://); this block only
// configures it, so it needs at least one https:// URL. Every request to a
// node uses it: bulk requests, the pool's probes, the start-up check.
type TLSConfig struct {
	// CAFile is a PEM file of the CA certificates that verify the nodes'
	// certificates, read at start. Default: the system's roots.
	CAFile string `hcl:"ca_file,optional"`
	// CertFile and KeyFile are a PEM client certificate (chain) and its
	// private key, for nodes that ask for one (PKI realm, or
	// client_authentication: required). Both or neither. They are read at
	// start and again, at the next TLS handshake, when either file
	// changes (checked at most once a second). Default none.
	CertFile string `hcl:"cert_file,optional"`
	KeyFile  string `hcl:"key_file,optional"`
	// ServerName is the name the nodes' certificates are verified
	// against. Default: the host of each URL.
	ServerName string `hcl:"server_name,optional"`
	// InsecureSkipVerify accepts any certificate a node presents: the
	// connection is encrypted but the node is not authenticated, so
	// anyone in between can read the credentials and the documents. For
	// tests only; the output logs a warning when it starts. Default false.
	InsecureSkipVerify bool `hcl:"insecure_skip_verify,optional"`
}

func (t TLSConfig) files() tlsconfig.Files {
	return tlsconfig.Files{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
		ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
}

// anyHTTPS reports whether a configured URL is https://.
func (c Config) anyHTTPS() bool {
	for _, a := range c.Addresses() {
		if u, err := url.Parse(a); err == nil && u.Scheme == "https" {
			return true
		}
	}
	return false
}

// validateTLS records what is wrong with the tls block: its files are read
// now, so a missing CA stops the agent at start, not at its first request.
func (c Config) validateTLS(p *shipper.Problems) {
	if c.TLS == (TLSConfig{}) {
		return
	}
	if !c.anyHTTPS() {
		p.Addf("tls", "every url is http://, so the tls settings would be ignored: use https:// URLs")
		return
	}
	tlsconfig.Build(p, "tls.", c.TLS.files())
}

// clientTLS returns the TLS configuration of connections to the nodes, or
// nil when no URL is https://. A client certificate is read again when its
// files change.
func (c Config) clientTLS(log *slog.Logger) (*tls.Config, error) {
	if !c.anyHTTPS() {
		return nil, nil
	}
	var p shipper.Problems
	cfg := tlsconfig.Build(&p, "tls.", c.TLS.files())
	if err := p.Err(); err != nil {
		return nil, err
	}
	if len(cfg.Certificates) == 1 {
		cc := newClientCert(c.TLS.CertFile, c.TLS.KeyFile, cfg.Certificates[0], log)
		cfg.Certificates, cfg.GetClientCertificate = nil, cc.get
	}
	return cfg, nil
}

// securityWarnings logs, once at start, what makes the connection to the
// nodes weaker than it looks.
func (c Config) securityWarnings(log *slog.Logger) {
	if c.TLS.InsecureSkipVerify {
		log.Warn("elasticsearch tls.insecure_skip_verify is set: the nodes' certificates are not verified, " +
			"so the connection can be intercepted and the credentials read; use tls.ca_file instead")
	}
	for _, s := range c.schemes() {
		if !s.configured {
			continue
		}
		for _, a := range c.Addresses() {
			if u, err := url.Parse(a); err == nil && u.Scheme == "http" {
				log.Warn("elasticsearch credentials are sent over http://: they cross the network in clear text; use https:// URLs",
					"url", u.Redacted(), "setting", "elasticsearch."+s.setting())
				break
			}
		}
	}
}

// clientCert is a client certificate read again when its files change.
type clientCert struct {
	certFile, keyFile string
	log               *slog.Logger
	every             time.Duration

	mu                  sync.Mutex
	checked             time.Time
	certStamp, keyStamp fileStamp
	cert                *tls.Certificate
	failing             bool
}

// newClientCert returns a loader that presents cert, read from the files
// just now, until they change.
func newClientCert(certFile, keyFile string, cert tls.Certificate, log *slog.Logger) *clientCert {
	c := &clientCert{certFile: certFile, keyFile: keyFile, log: log, every: secretCheckInterval, cert: &cert, checked: time.Now()}
	// A stat that fails leaves a zero stamp: the next check reads the
	// files again.
	c.certStamp, _ = statFile(certFile)
	c.keyStamp, _ = statFile(keyFile)
	return c
}

// get is the tls.Config's GetClientCertificate: the certificate as the
// files hold it now, or the last good one while they cannot be read (a
// certificate and a key of different pairs, half-way through a rotation).
func (c *clientCert) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) < c.every {
		return c.cert, nil
	}
	c.checked = time.Now()
	cs, cerr := statFile(c.certFile)
	ks, kerr := statFile(c.keyFile)
	if cerr == nil && kerr == nil && cs == c.certStamp && ks == c.keyStamp {
		return c.cert, nil
	}
	var p shipper.Problems
	cert, ok := tlsconfig.LoadKeyPair(&p, "tls.", c.certFile, c.keyFile)
	if err := errors.Join(cerr, kerr, p.Err()); !ok || err != nil {
		if !c.failing {
			c.failing = true
			c.log.Warn("elasticsearch: the client certificate changed and cannot be loaded; still presenting the last one loaded",
				"cert_file", c.certFile, "key_file", c.keyFile, "err", err)
		}
		return c.cert, nil
	}
	c.failing = false
	c.certStamp, c.keyStamp, c.cert = cs, ks, &cert
	c.log.Info("elasticsearch: the client certificate changed; presenting the new one", "cert_file", c.certFile)
	return c.cert, nil
}

// tlsProblem says what a failed TLS connection means and which setting to
// check, or "" when err is not a TLS failure. cert reports a certificate
// that did not verify: a configuration problem that waiting does not mend.
func tlsProblem(err error) (problem string, cert bool) {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		verify   *tls.CertificateVerificationError
		record   tls.RecordHeaderError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &unknown):
		return "the node's certificate is not trusted: no CA of elasticsearch.tls.ca_file (the system's roots without it) signed it; " +
			"check elasticsearch.tls.ca_file", true
	case errors.As(err, &hostname):
		return "the node's certificate is not valid for the name dialled; check elasticsearch.tls.server_name and the URL's host", true
	case errors.As(err, &invalid):
		return "the node's certificate is not valid (expired, or not for a server?); check the node's certificate and elasticsearch.tls.ca_file", true
	case errors.As(err, &verify):
		return "the node's certificate does not verify; check elasticsearch.tls.ca_file and elasticsearch.tls.server_name", true
	case strings.Contains(msg, "tls: certificate required"), strings.Contains(msg, "tls: bad certificate"),
		strings.Contains(msg, "tls: unknown certificate authority"), strings.Contains(msg, "tls: unknown certificate"):
		// The node's alert: it refused our certificate, or wants one.
		return "the node refused the client certificate (or wants one); check elasticsearch.tls.cert_file and key_file", true
	case errors.As(err, &record):
		return "the node did not answer with TLS: is it an http:// node listed as https://?", false
	case strings.Contains(msg, "TLS handshake timeout"):
		return "no TLS handshake within tls_handshake_timeout", false
	case strings.Contains(msg, "tls: "), strings.Contains(msg, "TLS handshake"):
		return "TLS handshake failed", false
	}
	return "", false
}

// Problem returns why nothing can be delivered when waiting will not mend
// it: every node is dead on a certificate that does not verify (the error
// says which setting to check). It is nil otherwise, also while nodes are
// merely down.
func (o *Output) Problem() error {
	if problem := o.pool.certProblem(); problem != "" {
		return fmt.Errorf("%w: %s", ErrTLS, problem)
	}
	return nil
}
