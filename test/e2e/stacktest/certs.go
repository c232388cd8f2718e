package stacktest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// The broker's TLS material, written by writeTLSFiles into one directory.
// Kafka reads PEM stores (ssl.keystore.type=PEM): the key store is one file
// with the unencrypted PKCS#8 key followed by the certificate chain.
const (
	caFile         = "ca.pem"          // the test CA's certificate: clients' and the broker's trust store
	serverFile     = "server.pem"      // the broker's key and certificate chain (its PEM key store)
	clientCertFile = "client-cert.pem" // a client certificate signed by the CA
	clientKeyFile  = "client-key.pem"  // its key
)

// certValidity is long enough for any stack's life; the files are made
// anew on every fresh start.
const certValidity = 365 * 24 * time.Hour

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and
// localhost and a client certificate, both signed by it (DER, and PKCS#8
// keys).
type testPKI struct {
	caDER                []byte
	serverDER, serverKey []byte
	clientDER, clientKey []byte
}

// newTestPKI creates a CA and its two certificates; serverCN names the
// server's.
func newTestPKI(serverCN string) (*testPKI, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "shipper e2e test CA (" + serverCN + ")"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	p := &testPKI{}
	var ca *x509.Certificate
	p.caDER, ca, err = sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating the test CA: %w", err)
	}
	leaf := func(cn string, usage x509.ExtKeyUsage, ips []net.IP, dns []string) (der, key []byte, err error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn},
			NotBefore:   now.Add(-time.Hour),
			NotAfter:    now.Add(certValidity),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: ips,
			DNSNames:    dns,
		}
		der, _, err = sign(tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			return nil, nil, fmt.Errorf("signing the %s certificate: %w", cn, err)
		}
		key, err = x509.MarshalPKCS8PrivateKey(k)
		return der, key, err
	}
	if p.serverDER, p.serverKey, err = leaf(serverCN, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}); err != nil {
		return nil, err
	}
	if p.clientDER, p.clientKey, err = leaf(SASLUser, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// pemFile is a file of PEM blocks.
type pemFile struct {
	name   string
	blocks []*pem.Block
}

func certBlock(der []byte) *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: der} }
func keyBlock(der []byte) *pem.Block  { return &pem.Block{Type: "PRIVATE KEY", Bytes: der} }

// writePEMFiles writes the files into dir.
func writePEMFiles(dir string, files []pemFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, f := range files {
		var b []byte
		for _, blk := range f.blocks {
			b = append(b, pem.EncodeToMemory(blk)...)
		}
		// Test keys of a throwaway CA: readable by the tests, like the rest
		// of the stack directory.
		if err := os.WriteFile(filepath.Join(dir, f.name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeTLSFiles creates a test CA, a server certificate for 127.0.0.1 and
// localhost and a client certificate, both signed by the CA, in dir, as the
// broker reads them.
func writeTLSFiles(dir string) error {
	p, err := newTestPKI("kafka")
	if err != nil {
		return err
	}
	return writePEMFiles(dir, []pemFile{
		{caFile, []*pem.Block{certBlock(p.caDER)}},
		{serverFile, []*pem.Block{keyBlock(p.serverKey), certBlock(p.serverDER), certBlock(p.caDER)}},
		{clientCertFile, []*pem.Block{certBlock(p.clientDER)}},
		{clientKeyFile, []*pem.Block{keyBlock(p.clientKey)}},
	})
}

// sign creates a certificate from tmpl, signed by parent's key, with a
// random serial number; it returns the DER and the parsed certificate.
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return der, cert, err
}
