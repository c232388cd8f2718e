package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/internal/tlsconfig"
)

// TLSConfig is the kafka block's tls block: TLS to every broker, for the
// consumer group, fetches and metadata alike.
type TLSConfig struct {
	// Enabled connects to the brokers over TLS. Default false. The other
	// settings need it: a tls block without enabled = true is an error
	// rather than a plain-TCP connection that ignores them.
	Enabled bool `hcl:"enabled,optional"`
	// CAFile is a PEM file of the CA certificates that verify the brokers'
	// certificates. Default: the system's roots.
	CAFile string `hcl:"ca_file,optional"`
	// CertFile and KeyFile are a PEM client certificate (chain) and its
	// private key, for brokers that authenticate clients by certificate.
	// Both or neither. Default none.
	CertFile string `hcl:"cert_file,optional"`
	KeyFile  string `hcl:"key_file,optional"`
	// ServerName is the name the brokers' certificates are verified
	// against. Default: the host of each broker address.
	ServerName string `hcl:"server_name,optional"`
	// InsecureSkipVerify accepts any certificate a broker presents: the
	// connection is encrypted but the broker is not authenticated, so
	// anyone in between can read and change the records. For tests only;
	// the input logs a warning when it starts. Default false.
	InsecureSkipVerify bool `hcl:"insecure_skip_verify,optional"`
}

// SASLConfig is the kafka block's sasl block: SASL authentication to every
// broker.
type SASLConfig struct {
	// Mechanism is "PLAIN", "SCRAM-SHA-256" or "SCRAM-SHA-512". Default
	// "" (no SASL). PLAIN sends the password as it is: use it over TLS.
	Mechanism string `hcl:"mechanism,optional"`
	// Username and Password log in; both required with a mechanism. Give
	// the password as env("NAME") to keep it out of the file; it is never
	// logged. Default none.
	Username string         `hcl:"username,optional"`
	Password shipper.Secret `hcl:"password,optional"`
}

// saslMechanisms are the accepted SASLConfig.Mechanism values.
var saslMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// validateSecurity records the problems of the tls and sasl blocks. The
// TLS files must be readable and hold what they should now: a missing file
// stops the agent at start, not at its first connection.
func (c Config) validateSecurity(p *shipper.Problems) {
	t := c.TLS
	if !t.Enabled {
		if t != (TLSConfig{}) {
			p.Addf("tls.enabled", "TLS is off, so the other tls settings would be ignored: set enabled = true")
		}
	} else {
		t.build(p)
	}

	s := c.SASL
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.Password != "" {
			p.Addf("sasl.mechanism", "must be set with a username or password: one of %q", saslMechanisms)
		}
		return
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
	default:
		p.Addf("sasl.mechanism", "must be one of %q, got %q", saslMechanisms, s.Mechanism)
	}
	if s.Username == "" {
		p.Addf("sasl.username", "required with sasl.mechanism %q", s.Mechanism)
	}
	if s.Password == "" {
		p.Addf("sasl.password", "required with sasl.mechanism %q", s.Mechanism)
	}
}

// build reads the files and returns the client TLS configuration, or
// records in p what is wrong, naming the setting and the file.
func (t TLSConfig) build(p *shipper.Problems) *tls.Config {
	return tlsconfig.Build(p, "tls.", tlsconfig.Files{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
		ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify})
}

// tlsConfig returns the client TLS configuration for the brokers, or nil
// when TLS is off.
func (c Config) tlsConfig() (*tls.Config, error) {
	if !c.TLS.Enabled {
		return nil, nil
	}
	var p shipper.Problems
	cfg := c.TLS.build(&p)
	return cfg, p.Err()
}

// saslMechanism returns the SASL mechanism that logs in to the brokers, or
// nil when SASL is off.
func (c Config) saslMechanism() (sasl.Mechanism, error) {
	s := c.SASL
	switch s.Mechanism {
	case "":
		return nil, nil
	case "PLAIN":
		return plain.Mechanism{Username: s.Username, Password: s.Password.Reveal()}, nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		algo := scram.SHA256
		if s.Mechanism == "SCRAM-SHA-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, s.Username, s.Password.Reveal())
		if err != nil {
			// Only stringprep problems of the username or password: say
			// which setting, never the value.
			return nil, &shipper.FieldError{Path: "sasl", Err: fmt.Errorf("%s: the username or password is not valid for SCRAM", s.Mechanism)}
		}
		return m, nil
	}
	return nil, &shipper.FieldError{Path: "sasl.mechanism", Err: fmt.Errorf("must be one of %q, got %q", saslMechanisms, s.Mechanism)}
}

// securityWarnings logs, once at start, what makes the connection to the
// brokers weaker than it looks.
func (c Config) securityWarnings(log *slog.Logger) {
	if c.TLS.Enabled && c.TLS.InsecureSkipVerify {
		log.Warn("kafka tls.insecure_skip_verify is set: the brokers' certificates are not verified, " +
			"so the connection can be intercepted; use ca_file instead")
	}
	if c.SASL.Mechanism == "PLAIN" && !c.TLS.Enabled {
		log.Warn("kafka sasl mechanism PLAIN without tls: the password crosses the network in clear text")
	}
}

// joinFailed records and logs an error of joining the consumer group (the
// group retries with its own backoff). Failures that retrying cannot fix,
// a refused login or a certificate that does not verify, are errors that
// say what to check.
func (in *Input) joinFailed(err error) {
	if errors.Is(err, kafkago.RebalanceInProgress) {
		in.log.Info("kafka consumer group rebalancing", "err", err)
		return
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
	)
	problem := err
	switch {
	case errors.Is(err, kafkago.SASLAuthenticationFailed), errors.Is(err, kafkago.UnsupportedSASLMechanism),
		errors.Is(err, kafkago.IllegalSASLState):
		const check = "check the sasl username, password and mechanism"
		problem = fmt.Errorf("kafka authentication failed (%s): %w", check, err)
		in.log.Error("kafka authentication failed; "+check,
			"mechanism", in.cfg.SASL.Mechanism, "username", in.cfg.SASL.Username, "err", err)
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		const check = "check tls ca_file and server_name"
		problem = fmt.Errorf("kafka TLS: the broker's certificate does not verify (%s): %w", check, err)
		in.log.Error("kafka TLS: the broker's certificate does not verify; "+check, "err", err)
	default:
		in.log.Warn("kafka consumer group", "err", err)
	}
	in.problem.Store(&problem)
}
