package spatego

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
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// testPKI is a CA and a server certificate for DNS:localhost and IP:127.0.0.1 signed by it
// (ECDSA P-256), made with crypto/x509 in a test's temporary directory: certFile (the server
// certificate, then the CA's) and keyFile (PKCS#8) for the broker, roots for the clients.
type testPKI struct {
	certFile, keyFile string
	roots             *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Spate Go Test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(2),
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{certFile: filepath.Join(dir, "server.pem"), keyFile: filepath.Join(dir, "server.key"), roots: x509.NewCertPool()}
	p.roots.AddCert(ca)
	var chain bytes.Buffer
	for _, der := range [][]byte{leafDER, caDER} {
		if err := pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p.certFile, chain.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startSecureBroker starts a broker of the test's own with the PLAINTEXT, SSL, SASL_PLAINTEXT and
// SASL_SSL listeners on free ports, pki's certificate, and extra flags; it is stopped (and must
// exit 0) when the test ends. The returned T gathers the test's franz-go logs and, on failure,
// prints them with the broker's stderr.
func startSecureBroker(t *testing.T, pki *testPKI, extra ...string) (*Broker, *T) {
	t.Helper()
	var listeners []string
	var ports []int
	for _, name := range []string{"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"} {
		port, err := freePort()
		for err == nil && slices.Contains(ports, port) {
			port, err = freePort()
		}
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, port)
		listeners = append(listeners, name+"://127.0.0.1:"+strconv.Itoa(port))
	}
	args := append([]string{"--listeners", strings.Join(listeners, ","),
		"--ssl-cert-file", pki.certFile, "--ssl-key-file", pki.keyFile}, extra...)
	b, err := StartBroker(spateBin(), args...)
	if err != nil {
		t.Fatal(err)
	}
	tt := &T{T: t, clientLog: newRingLog(400)}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("franz-go log (last lines; SPATE_GO_DEBUG=1 for debug level):\n%s", tt.clientLog.String(120))
			t.Logf("spate's stderr (last 60 lines; all of it in %s):\n%s", b.logPath, b.LogTail(60))
		}
		b.CleanUp(t.Failed())
	})
	return b, tt
}

// secureOpts are the options of a client of b's listener `listener`: that seed, TLS trusting
// pki's CA for SSL and SASL_SSL, mech for the SASL listeners.
func secureOpts(b *Broker, pki *testPKI, listener string, mech sasl.Mechanism) []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(b.Listeners[listener])}
	if strings.HasSuffix(listener, "SSL") {
		// franz-go sets ServerName to the host it dials (127.0.0.1): the IP SAN is checked.
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pki.roots, MinVersion: tls.VersionTLS12}))
	}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	return opts
}

// mechanism is the franz-go SASL mechanism name for user and password.
func mechanism(name, user, password string) sasl.Mechanism {
	switch name {
	case "PLAIN":
		return plain.Auth{User: user, Pass: password}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: user, Pass: password}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: user, Pass: password}.AsSha512Mechanism()
	}
	panic("unknown mechanism " + name)
}

// TestSecurity runs franz-go against a broker with every listener and every SASL mechanism:
//
//   - a user made with kadm's AlterUserSCRAMs (SCRAM-SHA-256 at 4096 iterations, SCRAM-SHA-512 at
//     8192) on the PLAINTEXT listener is described with both and their iterations; another
//     made with `spate user create` is listed too;
//   - over SSL, and over SASL_PLAINTEXT and SASL_SSL with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512
//     (as either user), a producer writes 10 records to a new two-partition topic and a group
//     member reads them back and commits; the broker's Metadata names the listener the client
//     came in on;
//   - a wrong password or an unknown user, with each mechanism on each SASL listener: a ping,
//     a produce and an admin call fail with SASL_AUTHENTICATION_FAILED, and nothing is written;
//   - deleting both of a user's credentials (AlterUserSCRAMs deletions): describing it answers
//     RESOURCE_NOT_FOUND and it can no longer authenticate with SCRAM or PLAIN.
func TestSecurity(t *testing.T) {
	pki := newTestPKI(t)
	b, tt := startSecureBroker(t, pki, "--sasl-enabled-mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512")
	plainAdm := kadm.NewClient(newClient(tt, "sec-admin", kgo.SeedBrokers(b.Listeners["PLAINTEXT"])).Client)

	const user, password = "gopher", "gopher-secret"
	altered, err := plainAdm.AlterUserSCRAMs(ctxFor(tt, opTimeout), nil, []kadm.UpsertSCRAM{
		{User: user, Mechanism: kadm.ScramSha256, Iterations: 4096, Password: password},
		{User: user, Mechanism: kadm.ScramSha512, Iterations: 8192, Password: password},
	})
	if err != nil || altered.Error() != nil {
		tt.Fatalf("AlterUserSCRAMs upsert %s: %v %v", user, err, altered.Sorted())
	}
	const cliUser, cliPassword = "cli-gopher", "cli-secret"
	if out, err := exec.Command(b.args[0], "user", "create", cliUser, "--password", cliPassword,
		"-b", b.Listeners["PLAINTEXT"]).CombinedOutput(); err != nil {
		tt.Fatalf("spate user create: %v\n%s", err, out)
	}

	t.Run("describe", func(t *testing.T) {
		tt := &T{T: t, clientLog: tt.clientLog}
		described, err := plainAdm.DescribeUserSCRAMs(ctxFor(tt, opTimeout))
		if err != nil {
			tt.Fatalf("DescribeUserSCRAMs: %v", err)
		}
		want := map[string]string{
			user:    "[SCRAM-SHA-256=iterations=4096 SCRAM-SHA-512=iterations=8192]",
			cliUser: "[SCRAM-SHA-256=iterations=4096 SCRAM-SHA-512=iterations=4096]",
		}
		for u, w := range want {
			d, ok := described[u]
			if !ok || d.Err != nil {
				tt.Errorf("DescribeUserSCRAMs: %s missing or failed (%v %s); users %v", u, d.Err, d.ErrMessage, described.Sorted())
				continue
			}
			infos := slices.Clone(d.CredInfos)
			slices.SortFunc(infos, func(a, b kadm.CredInfo) int { return int(a.Mechanism) - int(b.Mechanism) })
			if got := fmt.Sprint(infos); got != w {
				tt.Errorf("DescribeUserSCRAMs %s: %s, want %s", u, got, w)
			}
		}
	})

	for _, c := range []struct{ listener, mech, user, password string }{
		{"SSL", "", "", ""},
		{"SASL_PLAINTEXT", "PLAIN", user, password},
		{"SASL_PLAINTEXT", "SCRAM-SHA-256", user, password},
		{"SASL_PLAINTEXT", "SCRAM-SHA-512", cliUser, cliPassword},
		{"SASL_SSL", "PLAIN", cliUser, cliPassword},
		{"SASL_SSL", "SCRAM-SHA-256", user, password},
		{"SASL_SSL", "SCRAM-SHA-512", user, password},
	} {
		name := strings.Trim(c.listener+"/"+c.mech, "/")
		t.Run("produce-consume/"+name, func(t *testing.T) {
			tt := &T{T: t, clientLog: tt.clientLog}
			var mech sasl.Mechanism
			if c.mech != "" {
				mech = mechanism(c.mech, c.user, c.password)
			}
			opts := secureOpts(b, pki, c.listener, mech)
			topic := "sec-" + strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(name))
			adm := kadm.NewClient(newClient(tt, topic+"-admin", opts...).Client)
			brokers, err := adm.ListBrokers(ctxFor(tt, opTimeout))
			if err != nil {
				tt.Fatalf("Metadata on %s: %v", c.listener, err)
			}
			var addrs []string
			for _, br := range brokers {
				addrs = append(addrs, net.JoinHostPort(br.Host, strconv.Itoa(int(br.Port))))
			}
			if want := []string{b.Listeners[c.listener]}; !slices.Equal(addrs, want) {
				tt.Errorf("Metadata on %s lists brokers %v, want %v (that listener's address)", c.listener, addrs, want)
			}
			createTopic(tt, adm, topic, 2, nil)

			prod := newClient(tt, topic+"-producer", append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
			var sent []*kgo.Record
			for i := range 10 {
				sent = append(sent, &kgo.Record{Topic: topic, Partition: int32(i % 2), Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "%s-%d", name, i)})
			}
			produceSync(tt, prod, sent...)

			group := topic + "-group"
			cons := newClient(tt, topic+"-consumer", append(opts, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
				kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
			got := consumeN(tt, cons, len(sent))
			perPartition := map[int32][]string{}
			for _, r := range got {
				perPartition[r.Partition] = append(perPartition[r.Partition], string(r.Value))
			}
			for p := int32(0); p < 2; p++ {
				var want []string
				for _, r := range sent {
					if r.Partition == p {
						want = append(want, string(r.Value))
					}
				}
				if !slices.Equal(perPartition[p], want) {
					tt.Errorf("partition %d read back %v, want %v", p, perPartition[p], want)
				}
			}
			if err := cons.CommitUncommittedOffsets(ctxFor(tt, opTimeout)); err != nil {
				tt.Fatalf("commit on %s: %v", c.listener, err)
			}
			offsets, err := adm.FetchOffsets(ctxFor(tt, opTimeout), group)
			if err != nil || offsets.Error() != nil {
				tt.Fatalf("OffsetFetch on %s: %v %v", c.listener, err, offsets.Error())
			}
			for p := int32(0); p < 2; p++ {
				if o, ok := offsets.Lookup(topic, p); !ok || o.At != 5 {
					tt.Errorf("committed offset of partition %d: %+v (found %v), want 5", p, o, ok)
				}
			}
		})
	}

	// A topic nothing may reach without authenticating.
	const refused = "sec-refused"
	createTopic(tt, plainAdm, refused, 1, nil)
	for _, c := range []struct{ listener, mech, user, password string }{
		{"SASL_PLAINTEXT", "PLAIN", user, "wrong"},
		{"SASL_PLAINTEXT", "SCRAM-SHA-256", "nobody", password},
		{"SASL_SSL", "PLAIN", "nobody", password},
		{"SASL_SSL", "SCRAM-SHA-256", user, "wrong"},
		{"SASL_SSL", "SCRAM-SHA-512", user, "wrong"},
	} {
		t.Run(fmt.Sprintf("refused/%s/%s/%s", c.listener, c.mech, c.user), func(t *testing.T) {
			tt := &T{T: t, clientLog: tt.clientLog}
			assertAuthFails(tt, b, pki, c.listener, mechanism(c.mech, c.user, c.password), refused)
		})
	}
	end, err := plainAdm.ListEndOffsets(ctxFor(tt, opTimeout), refused)
	if o, ok := end.Lookup(refused, 0); err != nil || !ok || o.Offset != 0 {
		tt.Errorf("end offset of %s after the refused clients: %+v %v, want 0", refused, o, err)
	}

	t.Run("deleted-user", func(t *testing.T) {
		tt := &T{T: t, clientLog: tt.clientLog}
		const gone, gonePassword = "gone-gopher", "gone-secret"
		altered, err := plainAdm.AlterUserSCRAMs(ctxFor(tt, opTimeout), nil, []kadm.UpsertSCRAM{
			{User: gone, Mechanism: kadm.ScramSha256, Iterations: 4096, Password: gonePassword},
			{User: gone, Mechanism: kadm.ScramSha512, Iterations: 4096, Password: gonePassword},
		})
		if err != nil || altered.Error() != nil {
			tt.Fatalf("AlterUserSCRAMs upsert %s: %v %v", gone, err, altered.Sorted())
		}
		ping := newClient(tt, "gone-before", secureOpts(b, pki, "SASL_SSL", mechanism("SCRAM-SHA-512", gone, gonePassword))...)
		if err := ping.Ping(ctxFor(tt, opTimeout)); err != nil {
			tt.Fatalf("%s before its deletion: %v", gone, err)
		}
		ping.Close()
		altered, err = plainAdm.AlterUserSCRAMs(ctxFor(tt, opTimeout), []kadm.DeleteSCRAM{
			{User: gone, Mechanism: kadm.ScramSha256},
			{User: gone, Mechanism: kadm.ScramSha512},
		}, nil)
		if err != nil || altered.Error() != nil {
			tt.Fatalf("AlterUserSCRAMs delete %s: %v %v", gone, err, altered.Sorted())
		}
		described, err := plainAdm.DescribeUserSCRAMs(ctxFor(tt, opTimeout), gone)
		if err != nil {
			tt.Fatalf("DescribeUserSCRAMs %s: %v", gone, err)
		}
		if d := described[gone]; !errors.Is(d.Err, kerr.ResourceNotFound) || len(d.CredInfos) != 0 {
			tt.Errorf("DescribeUserSCRAMs of deleted %s: %+v, want RESOURCE_NOT_FOUND", gone, d)
		}
		for _, m := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"} {
			assertAuthFails(tt, b, pki, "SASL_SSL", mechanism(m, gone, gonePassword), refused)
		}
	})
}

// assertAuthFails checks that a client authenticating with mech on listener fails at once (well
// within opTimeout) with SASL_AUTHENTICATION_FAILED: a ping, a produce to topic and an admin call.
func assertAuthFails(tt *T, b *Broker, pki *testPKI, listener string, mech sasl.Mechanism, topic string) {
	tt.Helper()
	what := fmt.Sprintf("%s %s", listener, mech.Name())
	cl := newClient(tt, "refused", append(secureOpts(b, pki, listener, mech), kgo.RecordRetries(1))...)
	check := func(op string, err error) {
		tt.Helper()
		if !errors.Is(err, kerr.SaslAuthenticationFailed) {
			tt.Errorf("%s with %s: %v, want SASL_AUTHENTICATION_FAILED", op, what, err)
		}
	}
	start := time.Now()
	check("Ping", cl.Ping(ctxFor(tt, opTimeout)))
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	check("ProduceSync", cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("unauthenticated")}).FirstErr())
	_, err := kadm.NewClient(cl.Client).ListTopics(ctxFor(tt, opTimeout))
	check("ListTopics", err)
	if d := time.Since(start); d > opTimeout/2 {
		tt.Errorf("failing to authenticate with %s took %v", what, d)
	}
}

// TestSecurityReauthentication (KIP-368): with --connections-max-reauth-ms 2000 a franz-go
// producer and group consumer on SASL_SSL (SCRAM-SHA-512) keep working for over 6 s, a record
// every 200 ms: they authenticate again on their connections before their sessions end, so
// the broker closes none for an expired session, and counts the re-authentications.
func TestSecurityReauthentication(t *testing.T) {
	pki := newTestPKI(t)
	b, tt := startSecureBroker(t, pki, "--connections-max-reauth-ms", "2000")
	plainAdm := kadm.NewClient(newClient(tt, "reauth-admin", kgo.SeedBrokers(b.Listeners["PLAINTEXT"])).Client)
	const user, password = "reauth-gopher", "reauth-secret"
	altered, err := plainAdm.AlterUserSCRAMs(ctxFor(tt, opTimeout), nil, []kadm.UpsertSCRAM{
		{User: user, Mechanism: kadm.ScramSha512, Iterations: 4096, Password: password},
	})
	if err != nil || altered.Error() != nil {
		tt.Fatalf("AlterUserSCRAMs upsert %s: %v %v", user, err, altered.Sorted())
	}
	const topic = "sec-reauth"
	createTopic(tt, plainAdm, topic, 1, nil)
	okBefore := authentications(tt, b, "SASL_SSL", "SCRAM-SHA-512", "ok")

	opts := secureOpts(b, pki, "SASL_SSL", mechanism("SCRAM-SHA-512", user, password))
	prod := newClient(tt, "reauth-producer", opts...)
	cons := newClient(tt, "reauth-consumer", append(opts, kgo.ConsumeTopics(topic), kgo.ConsumerGroup("sec-reauth-group"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))...)
	var sent, read []string
	deadline := time.Now().Add(6500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		v := fmt.Sprintf("r%d", i)
		produceSync(tt, prod, &kgo.Record{Topic: topic, Value: []byte(v)})
		sent = append(sent, v)
		for _, r := range pollFor(tt, cons, 200*time.Millisecond) {
			read = append(read, string(r.Value))
		}
	}
	if len(read) < len(sent) {
		for _, r := range consumeN(tt, cons, len(sent)-len(read)) {
			read = append(read, string(r.Value))
		}
	}
	if !slices.Equal(read, sent) {
		tt.Errorf("read %v across re-authentications, want %v", read, sent)
	}
	if strings.Contains(b.Log(), "SASL session expired") {
		tt.Errorf("the broker closed a connection whose SASL session expired (franz-go did not re-authenticate in time)")
	}
	// The producer's and the consumer's connections (at least two) each authenticated at least
	// three times in 6.5 s of 2 s sessions.
	if ok := authentications(tt, b, "SASL_SSL", "SCRAM-SHA-512", "ok") - okBefore; ok < 6 {
		tt.Errorf("spate counted %v successful SCRAM-SHA-512 authentications on SASL_SSL in 6.5 s of 2 s sessions, want 6 or more", ok)
	}
}

// authentications is the broker's spate_authentications_total of listener, mechanism and outcome.
func authentications(tt *T, b *Broker, listener, mechanism, outcome string) float64 {
	tt.Helper()
	m, err := b.Metrics()
	if err != nil {
		tt.Fatalf("metrics: %v", err)
	}
	return metricSum(m, "spate_authentications_total", `listener="`+listener+`"`, `mechanism="`+mechanism+`"`, `outcome="`+outcome+`"`)
}
