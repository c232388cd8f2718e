package stacktest

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// pomVersion returns the text of <name>…</name> in the embedded pom.
func pomVersion(pom []byte, name string) string {
	re := regexp.MustCompile(`<` + regexp.QuoteMeta(name) + `>\s*([^<\s]+)\s*</` + regexp.QuoteMeta(name) + `>`)
	m := re.FindSubmatch(pom)
	if m == nil {
		panic("stacktest: pom.xml has no <" + name + "> property")
	}
	return string(m[1])
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a moment
// ago. All listeners are held until every port is chosen, so the ports differ.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("choosing a free port on 127.0.0.1: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// newClusterID returns a random Kafka cluster id: 16 random bytes in
// unpadded URL-safe base64, the form kafka.tools.StorageTool accepts. Like
// Kafka's own Uuid.randomUuid it avoids ids starting with '-' (they read as
// command-line flags).
func newClusterID() string {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			panic(err)
		}
		id := base64.RawURLEncoding.EncodeToString(b[:])
		if !strings.HasPrefix(id, "-") {
			return id
		}
	}
}

type kafkaConfig struct {
	Port           int // PLAINTEXT listener, what most clients use
	SASLPort       int // SASL_PLAINTEXT listener: SCRAM-SHA-256, SCRAM-SHA-512, PLAIN
	TLSPort        int // SSL listener; client certificates requested, not required
	ControllerPort int // KRaft CONTROLLER listener
	DataDir        string
	TLSDir         string // holds the files writeTLSFiles writes
}

// saslMechanisms are the mechanisms of the SASL_PLAINTEXT listener. Each
// needs a JAAS entry on the listener; the SCRAM users are created when the
// storage is formatted (scramArgs), the PLAIN user is listed in its JAAS
// entry.
var saslMechanisms = []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"}

// serverProperties renders a single-node KRaft (combined broker+controller)
// configuration for a throwaway test broker.
func (c kafkaConfig) serverProperties() string {
	var b bytes.Buffer
	p := func(k string, v any) { fmt.Fprintf(&b, "%s=%v\n", k, v) }
	b.WriteString("# Written by the shipper e2e test stack (test/e2e/stacktest); regenerated on every start.\n")
	p("process.roles", "broker,controller")
	p("node.id", 1)
	p("controller.quorum.voters", fmt.Sprintf("1@127.0.0.1:%d", c.ControllerPort))
	clients := fmt.Sprintf("PLAINTEXT://127.0.0.1:%d,SASL_PLAINTEXT://127.0.0.1:%d,SSL://127.0.0.1:%d", c.Port, c.SASLPort, c.TLSPort)
	p("listeners", fmt.Sprintf("%s,CONTROLLER://127.0.0.1:%d", clients, c.ControllerPort))
	p("advertised.listeners", clients)
	p("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,CONTROLLER:PLAINTEXT")
	p("controller.listener.names", "CONTROLLER")
	p("inter.broker.listener.name", "PLAINTEXT")
	// SASL_PLAINTEXT: no authorizer, so an authenticated user may do anything.
	p("sasl.enabled.mechanisms", strings.Join(saslMechanisms, ","))
	p("listener.name.sasl_plaintext.plain.sasl.jaas.config",
		fmt.Sprintf(`org.apache.kafka.common.security.plain.PlainLoginModule required user_%s="%s";`, SASLUser, SASLPassword))
	p("listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required;")
	p("listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config", "org.apache.kafka.common.security.scram.ScramLoginModule required;")
	// SSL: PEM stores, the key unencrypted (no ssl.key.password).
	p("listener.name.ssl.ssl.keystore.type", "PEM")
	p("listener.name.ssl.ssl.keystore.location", filepath.Join(c.TLSDir, serverFile))
	p("listener.name.ssl.ssl.truststore.type", "PEM")
	p("listener.name.ssl.ssl.truststore.location", filepath.Join(c.TLSDir, caFile))
	p("listener.name.ssl.ssl.client.auth", "requested")
	p("log.dirs", c.DataDir)
	p("auto.create.topics.enable", true)
	p("delete.topic.enable", true)
	p("num.partitions", 1)
	p("default.replication.factor", 1)
	p("min.insync.replicas", 1)
	p("offsets.topic.replication.factor", 1)
	// 50 partitions (the default) make the first consumer-group call slow.
	p("offsets.topic.num.partitions", 4)
	p("transaction.state.log.replication.factor", 1)
	p("transaction.state.log.min.isr", 1)
	p("transaction.state.log.num.partitions", 4)
	p("group.initial.rebalance.delay.ms", 0)
	// Tests that kill consumers use 1s sessions, so that a restarted member
	// does not wait 6s (the default minimum) for its dead predecessor.
	p("group.min.session.timeout.ms", 1000)
	p("num.network.threads", 2)
	p("num.io.threads", 4)
	p("num.recovery.threads.per.data.dir", 1)
	p("log.retention.hours", 24)
	p("log.cleaner.threads", 1)
	p("log.cleaner.dedupe.buffer.size", 8*1024*1024)
	return b.String()
}

// scramArgs are the StorageTool format arguments that create the SCRAM
// user (KRaft keeps SCRAM credentials in the metadata log, so they are
// made when the storage is formatted).
func scramArgs() []string {
	var args []string
	for _, m := range saslMechanisms {
		if strings.HasPrefix(m, "SCRAM-") {
			args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", m, SASLUser, SASLPassword))
		}
	}
	return args
}

// kafkaLog4j is the broker's logging config (reload4j via slf4j-reload4j):
// everything goes to stdout, which the stack redirects to logs/kafka.log.
const kafkaLog4j = `# Written by the shipper e2e test stack (test/e2e/stacktest).
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.network.RequestChannel$=WARN
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=WARN
log4j.logger.org.apache.kafka.common.metrics=WARN
`

type esConfig struct {
	HTTPPort      int
	TransportPort int
	DataDir       string
	LogsDir       string
	// Secure turns security on: HTTPS with the certificates in the
	// config directory's certs/, the file realm's users and a service
	// account token (secure.go).
	Secure bool
}

func (c esConfig) scheme() string {
	if c.Secure {
		return "https"
	}
	return "http"
}

// elasticsearchYML renders a single-node configuration bound to loopback.
func (c esConfig) elasticsearchYML() string {
	var b bytes.Buffer
	p := func(k string, v any) { fmt.Fprintf(&b, "%s: %v\n", k, v) }
	b.WriteString("# Written by the shipper e2e test stack (test/e2e/stacktest); regenerated on every start.\n")
	if c.Secure {
		p("cluster.name", "shipper-stack-secure")
		p("node.name", "secure")
	} else {
		p("cluster.name", "shipper-stack")
		p("node.name", "stack")
	}
	p("path.data", strconv.Quote(c.DataDir))
	p("path.logs", strconv.Quote(c.LogsDir))
	p("network.host", "127.0.0.1")
	p("http.port", c.HTTPPort)
	p("transport.port", c.TransportPort)
	p("discovery.type", "single-node")
	// A nearly full disk must not make the node refuse writes.
	p("cluster.routing.allocation.disk.threshold_enabled", false)
	// Let tests clean up with wildcards (DELETE /shipper-*).
	p("action.destructive_requires_name", false)
	if !c.Secure {
		// The integ-test zip does contain the x-pack-security module,
		// and with it security would auto-configure TLS and passwords on
		// first start.
		p("xpack.security.enabled", false)
		return b.String()
	}
	p("xpack.security.enabled", true)
	// Every security setting is given here: the first start must not
	// generate certificates, passwords or enrollment tokens of its own.
	p("xpack.security.autoconfiguration.enabled", false)
	// HTTPS with the stack's certificates (paths relative to the config
	// directory, the only place the node may read them from). Client
	// certificates are asked for, not required, so the tests can present
	// one or not.
	p("xpack.security.http.ssl.enabled", true)
	p("xpack.security.http.ssl.key", strconv.Quote(esCertsDir+"/"+esNodeKeyFile))
	p("xpack.security.http.ssl.certificate", strconv.Quote(esCertsDir+"/"+esNodeCertFile))
	p("xpack.security.http.ssl.certificate_authorities", strconv.Quote(esCertsDir+"/"+caFile))
	p("xpack.security.http.ssl.client_authentication", "optional")
	// The transport binds to loopback and the node is alone (single-node
	// discovery): nothing reaches it, so it needs no TLS.
	p("xpack.security.transport.ssl.enabled", false)
	return b.String()
}

// parseJavaMajor extracts the feature version from `java -version` output:
// `openjdk version "17.0.15" …` → 17, `java version "1.8.0_402"` → 8.
func parseJavaMajor(out string) (int, error) {
	m := regexp.MustCompile(`version "([^"]+)"`).FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("cannot find a version in `java -version` output: %q", strings.TrimSpace(out))
	}
	v := m[1]
	if strings.HasPrefix(v, "1.") {
		v = v[2:]
	}
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		v = v[:end]
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("cannot parse Java version %q", m[1])
	}
	return n, nil
}

// lastLines returns at most n trailing lines of b.
func lastLines(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
