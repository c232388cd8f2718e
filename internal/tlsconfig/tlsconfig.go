// Package tlsconfig builds a client TLS configuration from the settings of
// a tls block (a CA file, a client certificate and key, a server name,
// insecure_skip_verify), so that the Kafka input and the Elasticsearch
// output read and check their files the same way and report the same
// problems.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"os"

	"github.com/shipper-agent/shipper"
)

// Files are the settings of a tls block. File names are of PEM files.
type Files struct {
	// CAFile holds the CA certificates that verify the server; "" for the
	// system's roots.
	CAFile string
	// CertFile and KeyFile are a client certificate (chain) and its
	// private key; both or neither.
	CertFile, KeyFile string
	// ServerName is the name the server's certificate is verified
	// against; "" for the host dialled.
	ServerName string
	// InsecureSkipVerify accepts any server certificate.
	InsecureSkipVerify bool
}

// Build reads the files and returns the client TLS configuration (TLS 1.2
// at least), or records in p what is wrong and returns nil. Each problem
// names its setting as prefix + the setting's name ("tls.ca_file" with
// prefix "tls."), and the file; never a key's content.
func Build(p *shipper.Problems, prefix string, f Files) *tls.Config {
	n := len(*p)
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         f.ServerName,
		InsecureSkipVerify: f.InsecureSkipVerify,
	}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		switch {
		case err != nil:
			p.Addf(prefix+"ca_file", "cannot read it: %v", err)
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				p.Addf(prefix+"ca_file", "%s holds no PEM certificate", f.CAFile)
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case f.CertFile != "" && f.KeyFile == "":
		p.Addf(prefix+"key_file", "required with %scert_file (%s)", prefix, f.CertFile)
	case f.CertFile == "" && f.KeyFile != "":
		p.Addf(prefix+"cert_file", "required with %skey_file (%s)", prefix, f.KeyFile)
	case f.CertFile != "":
		cert, ok := LoadKeyPair(p, prefix, f.CertFile, f.KeyFile)
		if ok {
			cfg.Certificates = []tls.Certificate{cert}
		}
	}
	if len(*p) > n {
		return nil
	}
	return cfg
}

// LoadKeyPair reads a client certificate and its key, or records in p what
// is wrong (under prefix+"cert_file" or prefix+"key_file").
func LoadKeyPair(p *shipper.Problems, prefix, certFile, keyFile string) (tls.Certificate, bool) {
	certOK, keyOK := readable(p, prefix+"cert_file", certFile), readable(p, prefix+"key_file", keyFile)
	if !certOK || !keyOK {
		return tls.Certificate{}, false
	}
	// The key file's content never reaches an error: LoadX509KeyPair
	// reports only what is wrong with it.
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		p.Addf(prefix+"cert_file", "%s with key %s: %v", certFile, keyFile, err)
		return tls.Certificate{}, false
	}
	return cert, true
}

// readable records a problem at path unless the file can be read.
func readable(p *shipper.Problems, path, file string) bool {
	f, err := os.Open(file)
	if err != nil {
		p.Addf(path, "cannot read it: %v", err)
		return false
	}
	f.Close()
	return true
}
