package stacktest

import (
	"bytes"
	"context"
	"crypto/pbkdf2"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestVersionsComeFromPom(t *testing.T) {
	if KafkaVersion != "3.9.2" || ESVersion != "8.19.21" {
		t.Fatalf("KafkaVersion=%q ESVersion=%q; update the test if pom.xml changed on purpose", KafkaVersion, ESVersion)
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ports, err := freePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || p > 65535 || seen[p] {
			t.Fatalf("bad or repeated port %d in %v", p, ports)
		}
		seen[p] = true
	}
}

func TestNewClusterID(t *testing.T) {
	for range 200 {
		id := newClusterID()
		if len(id) != 22 || strings.HasPrefix(id, "-") {
			t.Fatalf("bad cluster id %q", id)
		}
		if b, err := base64.RawURLEncoding.DecodeString(id); err != nil || len(b) != 16 {
			t.Fatalf("cluster id %q does not decode to 16 bytes: %v", id, err)
		}
	}
}

func TestServerProperties(t *testing.T) {
	got := kafkaConfig{Port: 1001, ControllerPort: 1002, SASLPort: 1003, TLSPort: 1004, DataDir: "/d", TLSDir: "/t"}.serverProperties()
	for _, want := range []string{
		"process.roles=broker,controller\n",
		"controller.quorum.voters=1@127.0.0.1:1002\n",
		"listeners=PLAINTEXT://127.0.0.1:1001,SASL_PLAINTEXT://127.0.0.1:1003,SSL://127.0.0.1:1004,CONTROLLER://127.0.0.1:1002\n",
		"advertised.listeners=PLAINTEXT://127.0.0.1:1001,SASL_PLAINTEXT://127.0.0.1:1003,SSL://127.0.0.1:1004\n",
		"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,CONTROLLER:PLAINTEXT\n",
		"inter.broker.listener.name=PLAINTEXT\n",
		"sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN\n",
		`listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_shipper="` + SASLPassword + `";` + "\n",
		"listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n",
		"listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;\n",
		"listener.name.ssl.ssl.keystore.type=PEM\n",
		"listener.name.ssl.ssl.keystore.location=/t/server.pem\n",
		"listener.name.ssl.ssl.truststore.location=/t/ca.pem\n",
		"listener.name.ssl.ssl.client.auth=requested\n",
		"log.dirs=/d\n",
		"offsets.topic.replication.factor=1\n",
		"transaction.state.log.min.isr=1\n",
		"group.initial.rebalance.delay.ms=0\n",
		"auto.create.topics.enable=true\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("server.properties lacks %q:\n%s", want, got)
		}
	}
}

func TestScramArgs(t *testing.T) {
	got := strings.Join(scramArgs(), " ")
	want := "--add-scram SCRAM-SHA-256=[name=shipper,password=" + SASLPassword + "] " +
		"--add-scram SCRAM-SHA-512=[name=shipper,password=" + SASLPassword + "]"
	if got != want {
		t.Errorf("scramArgs() = %q, want %q", got, want)
	}
}

// TestTLSFiles checks the generated files as a client and the broker use
// them: the server certificate verifies for 127.0.0.1 and localhost against
// the CA, the client certificate verifies for client auth, and a TLS
// handshake with the client configuration of Stack.TLSConfig succeeds
// against a server using server.pem.
func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	if err := writeTLSFiles(dir); err != nil {
		t.Fatal(err)
	}
	s := newStack(t.TempDir(), nil, "")
	s.KafkaTLSCA = filepath.Join(dir, caFile)
	s.KafkaTLSClientCert = filepath.Join(dir, clientCertFile)
	s.KafkaTLSClientKey = filepath.Join(dir, clientKeyFile)
	clientCfg, err := s.TLSConfig(true)
	if err != nil {
		t.Fatal(err)
	}

	// server.pem is Kafka's PEM key store: the PKCS#8 key, then the chain.
	pemBytes, err := os.ReadFile(filepath.Join(dir, serverFile))
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for rest := pemBytes; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		types = append(types, b.Type)
	}
	if want := []string{"PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"}; !slices.Equal(types, want) {
		t.Fatalf("server.pem holds %q, want %q", types, want)
	}
	serverCert, err := tls.X509KeyPair(pemBytes, pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(serverCert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: clientCfg.RootCAs, DNSName: name}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	clientLeaf, err := x509.ParseCertificate(clientCfg.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clientLeaf.Verify(x509.VerifyOptions{Roots: clientCfg.RootCAs,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCfg.RootCAs})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), clientCfg)
	if err != nil {
		t.Fatalf("TLS handshake with the stack's client configuration: %v", err)
	}
	conn.Close()
}

func TestStackEnv(t *testing.T) {
	s := newStack("/st", map[string]int{"plaintext": 1, "sasl_plaintext": 2, "ssl": 3, "controller": 4}, "http://127.0.0.1:5")
	want := []string{
		"KAFKA_BROKERS=127.0.0.1:1",
		"KAFKA_SASL_BROKERS=127.0.0.1:2",
		"KAFKA_TLS_BROKERS=127.0.0.1:3",
		"KAFKA_TLS_CA=/st/kafka/tls/ca.pem",
		"KAFKA_TLS_CLIENT_CERT=/st/kafka/tls/client-cert.pem",
		"KAFKA_TLS_CLIENT_KEY=/st/kafka/tls/client-key.pem",
		"KAFKA_SASL_USER=shipper",
		"KAFKA_SASL_PASSWORD=" + SASLPassword,
		"ES_URL=http://127.0.0.1:5",
	}
	if got := s.Env(); !slices.Equal(got, want) {
		t.Errorf("Env() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestOldLayoutIsNotReused: a state without the layout version (written
// before the broker had SASL and TLS listeners) is never reused, whatever
// its servers answer.
func TestOldLayoutIsNotReused(t *testing.T) {
	st := &state{Kafka: serverState{Version: KafkaVersion}, Elasticsearch: serverState{Version: ESVersion}}
	if problem := checkRunning(context.Background(), t.TempDir(), st, 1); !strings.Contains(problem, "older stacktest") {
		t.Errorf("checkRunning(layout 0) = %q, want it to name an older stacktest", problem)
	}
}

func TestElasticsearchYML(t *testing.T) {
	got := esConfig{HTTPPort: 2001, TransportPort: 2002, DataDir: "/data dir", LogsDir: "/l"}.elasticsearchYML()
	for _, want := range []string{
		"network.host: 127.0.0.1\n",
		"http.port: 2001\n",
		"transport.port: 2002\n",
		"discovery.type: single-node\n",
		"cluster.routing.allocation.disk.threshold_enabled: false\n",
		`path.data: "/data dir"` + "\n",
		`path.logs: "/l"` + "\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("elasticsearch.yml lacks %q:\n%s", want, got)
		}
	}
}

func TestParseJavaMajor(t *testing.T) {
	for out, want := range map[string]int{
		`openjdk version "17.0.15" 2025-04-15`:                       17,
		`openjdk version "25" 2025-09-16 LTS`:                        25,
		`openjdk version "21-ea" 2023-09-19`:                         21,
		`java version "1.8.0_402"`:                                   8,
		"Picked up JAVA_TOOL_OPTIONS: x\nopenjdk version \"11.0.2\"": 11,
	} {
		got, err := parseJavaMajor(out)
		if err != nil || got != want {
			t.Errorf("parseJavaMajor(%q) = %d, %v; want %d", out, got, err, want)
		}
	}
	if _, err := parseJavaMajor("no version here"); err == nil {
		t.Error("parseJavaMajor accepted output without a version")
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines([]byte("a\nb\nc\n"), 2); got != "b\nc" {
		t.Errorf("got %q", got)
	}
	if got := lastLines([]byte("a\n"), 5); got != "a" {
		t.Errorf("got %q", got)
	}
	if got := lastLines(nil, 5); got != "" {
		t.Errorf("got %q", got)
	}
}

func TestReadProcSelf(t *testing.T) {
	p, ok := readProc(1)
	if !ok {
		t.Fatal("cannot read /proc/1/stat; the stack needs Linux /proc")
	}
	if !alive(1, 0) {
		t.Error("pid 1 should be alive")
	}
	if alive(1, p.StartTime+1) {
		t.Error("a different start time must not count as the same process")
	}
}

func TestESHealth(t *testing.T) {
	var status, code = "red", 200
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_cluster/health" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"cluster_name":"x","status":%q}`, status)
	}))
	defer srv.Close()
	ctx := context.Background()
	if got, err := esHealth(ctx, srv.URL, false); err != nil || got != "red" {
		t.Errorf("red cluster, reuse check: got %q, %v; want red, nil", got, err)
	}
	code = http.StatusRequestTimeout // what wait_for_status answers when it times out
	if _, err := esHealth(ctx, srv.URL, true); err == nil {
		t.Error("a 408 from wait_for_status=yellow must be an error")
	}
	status, code = "yellow", 200
	if got, err := esHealth(ctx, srv.URL, true); err != nil || got != "yellow" {
		t.Errorf("got %q, %v; want yellow, nil", got, err)
	}
}

func TestStackEnvWithSecuredNode(t *testing.T) {
	s := newStack("/st", map[string]int{"plaintext": 1, "sasl_plaintext": 2, "ssl": 3, "controller": 4}, "http://127.0.0.1:5")
	s.withSecure("/st", "https://127.0.0.1:6")
	got := s.Env()
	want := []string{
		"ES_URL=http://127.0.0.1:5",
		"ES_SECURE_URL=https://127.0.0.1:6",
		"ES_SECURE_CA=/st/elasticsearch-secure/config/certs/ca.pem",
		"ES_SECURE_CLIENT_CERT=/st/elasticsearch-secure/config/certs/client-cert.pem",
		"ES_SECURE_CLIENT_KEY=/st/elasticsearch-secure/config/certs/client-key.pem",
		"ES_SECURE_USER=" + SecureESUser,
		"ES_SECURE_PASSWORD=" + SecureESPassword,
		"ES_SECURE_BEARER_TOKEN=" + SecureServiceToken(),
	}
	if len(got) < len(want) || !slices.Equal(got[len(got)-len(want):], want) {
		t.Errorf("Env() =\n%s\nwant it to end with\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSecureElasticsearchYML(t *testing.T) {
	got := esConfig{HTTPPort: 2001, TransportPort: 2002, DataDir: "/d", LogsDir: "/l", Secure: true}.elasticsearchYML()
	for _, want := range []string{
		"xpack.security.enabled: true\n",
		"xpack.security.autoconfiguration.enabled: false\n",
		"xpack.security.http.ssl.enabled: true\n",
		`xpack.security.http.ssl.certificate: "certs/node.pem"` + "\n",
		`xpack.security.http.ssl.key: "certs/node-key.pem"` + "\n",
		`xpack.security.http.ssl.certificate_authorities: "certs/ca.pem"` + "\n",
		"discovery.type: single-node\n",
		"network.host: 127.0.0.1\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("elasticsearch.yml lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "xpack.security.enabled: false") {
		t.Errorf("security off in the secured node's configuration:\n%s", got)
	}
}

// TestSecureFiles: the secured node's files: its certificate verifies for
// 127.0.0.1 against the CA and matches its key; the users file holds a
// PBKDF2 hash of the password in Elasticsearch's format; the service token
// file holds the token's; the bearer token decodes to the prefix and the
// token's qualified name and secret.
func TestSecureFiles(t *testing.T) {
	conf := t.TempDir()
	if err := writeSecureFiles(conf); err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(conf, esCertsDir)
	pair, err := tls.LoadX509KeyPair(filepath.Join(certs, esNodeCertFile), filepath.Join(certs, esNodeKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	c, err := httpsClient(filepath.Join(certs, caFile))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.Transport.(*http.Transport).TLSClientConfig.RootCAs, DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("node certificate: %v", err)
	}

	verify := func(file, key, secret string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(conf, file))
		if err != nil {
			t.Fatal(err)
		}
		line := strings.TrimSuffix(string(b), "\n")
		hash, ok := strings.CutPrefix(line, key+":")
		if !ok {
			t.Fatalf("%s = %q, want %s:<hash>", file, line, key)
		}
		f := strings.Split(strings.TrimPrefix(hash, "{PBKDF2}"), "$")
		if !strings.HasPrefix(hash, "{PBKDF2}10000$") || len(f) != 3 {
			t.Fatalf("%s: hash %q is not {PBKDF2}10000$<salt>$<key>", file, hash)
		}
		salt, err1 := base64.StdEncoding.DecodeString(f[1])
		want, err2 := base64.StdEncoding.DecodeString(f[2])
		if err1 != nil || err2 != nil || len(salt) != 32 || len(want) != 32 {
			t.Fatalf("%s: salt %d bytes, key %d bytes (%v %v)", file, len(salt), len(want), err1, err2)
		}
		got, _ := pbkdf2.Key(sha512.New, secret, salt, 10000, 32)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the hash is not of the secret", file)
		}
	}
	verify("users", SecureESUser, SecureESPassword)
	verify("service_tokens", "elastic/fleet-server/shipper-e2e", serviceTokenSecret)
	if b, _ := os.ReadFile(filepath.Join(conf, "users_roles")); string(b) != "superuser:"+SecureESUser+"\n" {
		t.Errorf("users_roles = %q", b)
	}

	raw, err := base64.RawStdEncoding.DecodeString(SecureServiceToken())
	if err != nil || !bytes.Equal(raw[:4], []byte{0, 1, 0, 1}) ||
		string(raw[4:]) != "elastic/fleet-server/shipper-e2e:"+serviceTokenSecret {
		t.Errorf("bearer token decodes to %q, %v", raw, err)
	}
}
