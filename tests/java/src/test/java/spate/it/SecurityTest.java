package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static spate.it.Clients.TIMEOUT_S;

import java.io.DataInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialAlteration;
import org.apache.kafka.clients.admin.UserScramCredentialDeletion;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.admin.UserScramCredentialsDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.SaslConfigs;
import org.apache.kafka.common.config.SslConfigs;
import org.apache.kafka.common.errors.ResourceNotFoundException;
import org.apache.kafka.common.errors.SaslAuthenticationException;
import org.apache.kafka.common.errors.SslAuthenticationException;
import org.apache.kafka.common.errors.UnsupportedSaslMechanismException;
import org.apache.kafka.common.message.MetadataRequestData;
import org.apache.kafka.common.message.SaslAuthenticateRequestData;
import org.apache.kafka.common.message.SaslHandshakeRequestData;
import org.apache.kafka.common.protocol.ApiKeys;
import org.apache.kafka.common.protocol.Errors;
import org.apache.kafka.common.requests.AbstractRequest;
import org.apache.kafka.common.requests.AbstractResponse;
import org.apache.kafka.common.requests.MetadataRequest;
import org.apache.kafka.common.requests.MetadataResponse;
import org.apache.kafka.common.requests.RequestHeader;
import org.apache.kafka.common.requests.SaslAuthenticateRequest;
import org.apache.kafka.common.requests.SaslAuthenticateResponse;
import org.apache.kafka.common.requests.SaslHandshakeRequest;
import org.apache.kafka.common.requests.SaslHandshakeResponse;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * TLS and SASL with the Java client: Spate's {@code --listeners} (one per security protocol),
 * {@code --ssl-*} and {@code --sasl-enabled-mechanisms}, the SCRAM users of
 * AlterUserScramCredentials / DescribeUserScramCredentials, mutual TLS and KIP-368
 * re-authentication.
 *
 * <p>A test PKI is made once for the class with the {@code openssl} CLI (a CA, a server
 * certificate for DNS:localhost and IP:127.0.0.1, a client certificate, and a client certificate
 * of an impostor CA); the clients trust the CA through a PEM truststore ({@code ssl.truststore.type=PEM})
 * and present their certificate from a PKCS12 keystore built here with java.security.
 *
 * <p>Three brokers: {@link #broker} with every listener and every mechanism, {@link #mtls} with
 * {@code --ssl-client-auth required} and the default mechanisms (SCRAM only), {@link #reauth}
 * with {@code --connections-max-reauth-ms 2000}. Users are made on each broker's PLAINTEXT
 * listener, which needs no authentication.
 */
class SecurityTest {
    private static final String PLAINTEXT = "PLAINTEXT";
    private static final String SSL = "SSL";
    private static final String SASL_PLAINTEXT = "SASL_PLAINTEXT";
    private static final String SASL_SSL = "SASL_SSL";

    private static final String USER = "alice";
    private static final String PASSWORD = "alice-secret";
    /** Iterations of alice's two credentials: different, so that describe shows each its own. */
    private static final int ITERATIONS_256 = 4096;
    private static final int ITERATIONS_512 = 8192;

    /** Made before the brokers, which are started with its files. */
    static final Pki PKI = Pki.create();

    @RegisterExtension
    static final SpateBroker broker = SpateBroker.withListeners(List.of(PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL),
            "--ssl-cert-file", PKI.serverCert.toString(), "--ssl-key-file", PKI.serverKey.toString(),
            "--sasl-enabled-mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512").named("main");

    @RegisterExtension
    static final SpateBroker mtls = SpateBroker.withListeners(List.of(PLAINTEXT, SSL, SASL_SSL),
            "--ssl-cert-file", PKI.serverCert.toString(), "--ssl-key-file", PKI.serverKey.toString(),
            "--ssl-ca-file", PKI.caCert.toString(), "--ssl-client-auth", "required").named("mtls");

    @RegisterExtension
    static final SpateBroker reauth = SpateBroker.withListeners(List.of(PLAINTEXT, SASL_PLAINTEXT, SASL_SSL),
            "--ssl-cert-file", PKI.serverCert.toString(), "--ssl-key-file", PKI.serverKey.toString(),
            "--sasl-enabled-mechanisms", "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "--connections-max-reauth-ms", "2000").named("reauth");

    @BeforeAll
    static void createUsers() throws Exception {
        for (SpateBroker b : List.of(broker, mtls, reauth)) {
            upsert(b, USER, PASSWORD, new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, ITERATIONS_256),
                    new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, ITERATIONS_512));
        }
    }

    // ---- the tests ----

    /**
     * A user made with AlterUserScramCredentials is described with each mechanism and its
     * iterations, by name and in the list of all users, on PLAINTEXT and, authenticated as that
     * user, on SASL_SSL.
     */
    @Test
    void describeUserScramCredentialsShowsMechanismsAndIterations() throws Exception {
        List<String> want = List.of("SCRAM_SHA_256/" + ITERATIONS_256, "SCRAM_SHA_512/" + ITERATIONS_512);
        try (Admin admin = admin(broker, PLAINTEXT, new Properties())) {
            assertEquals(want, credentials(admin.describeUserScramCredentials(List.of(USER)).description(USER)
                    .get(TIMEOUT_S, TimeUnit.SECONDS)), log(broker));
            Map<String, UserScramCredentialsDescription> all = admin.describeUserScramCredentials().all()
                    .get(TIMEOUT_S, TimeUnit.SECONDS);
            assertTrue(all.containsKey(USER), "all users: " + all.keySet());
            assertEquals(want, credentials(all.get(USER)));
        }
        try (Admin admin = admin(broker, SASL_SSL, security(SASL_SSL, "SCRAM-SHA-512", USER, PASSWORD))) {
            assertEquals(want, credentials(admin.describeUserScramCredentials(List.of(USER)).description(USER)
                    .get(TIMEOUT_S, TimeUnit.SECONDS)), log(broker));
        }
    }

    /**
     * Produce and consume (a group: FindCoordinator, JoinGroup, OffsetCommit on the same listener)
     * over TLS with a PEM truststore and hostname verification of IP:127.0.0.1; the broker
     * describes itself with the SSL listener's address.
     */
    @Test
    void sslProduceConsume() throws Exception {
        roundTrip(broker, SSL, security(SSL, null, null, null), "tls-topic");
    }

    /** Produce and consume over each SASL listener with each mechanism, as {@link #USER}. */
    @ParameterizedTest(name = "{0} {1}")
    @CsvSource({
        "SASL_SSL, SCRAM-SHA-256",
        "SASL_SSL, SCRAM-SHA-512",
        "SASL_SSL, PLAIN",
        "SASL_PLAINTEXT, PLAIN",
        "SASL_PLAINTEXT, SCRAM-SHA-256",
        "SASL_PLAINTEXT, SCRAM-SHA-512",
    })
    void saslProduceConsume(String protocol, String mechanism) throws Exception {
        roundTrip(broker, protocol, security(protocol, mechanism, USER, PASSWORD),
                "sasl-" + protocol.toLowerCase() + "-" + mechanism.toLowerCase());
    }

    /**
     * A wrong password, or a user that does not exist: the producer's send, the admin client's
     * call and the consumer's poll fail with SaslAuthenticationException, on each listener and
     * mechanism, and nothing reaches the topic.
     */
    @ParameterizedTest(name = "{0} {1}")
    @CsvSource({
        "SASL_SSL, SCRAM-SHA-256",
        "SASL_SSL, SCRAM-SHA-512",
        "SASL_PLAINTEXT, PLAIN",
        "SASL_PLAINTEXT, SCRAM-SHA-512",
    })
    void wrongPasswordFailsAuthentication(String protocol, String mechanism) throws Exception {
        String topic = "wrong-password-" + protocol.toLowerCase() + "-" + mechanism.toLowerCase();
        Clients.createTopic(broker, topic, 1, Map.of());
        double failedBefore = failedAuthentications(broker, protocol, mechanism);
        for (String[] who : new String[][] {{USER, "not-" + PASSWORD}, {"nobody", PASSWORD}}) {
            Properties sec = security(protocol, mechanism, who[0], who[1]);
            String what = protocol + " " + mechanism + " as " + who[0] + " with password " + who[1];
            assertSaslAuthenticationFails(broker, protocol, sec, topic, what);
        }
        assertEquals(0, endOffset(broker, topic), "records reached " + topic + " without authentication\n" + log(broker));
        double failed = failedAuthentications(broker, protocol, mechanism) - failedBefore;
        assertTrue(failed >= 6, "spate_authentications outcome=\"failed\" of " + protocol + " " + mechanism
                + " grew by " + failed + " for 6 failing clients\n" + broker.metrics());
    }

    /**
     * A user with only a SCRAM-SHA-512 credential: SCRAM-SHA-256 fails for it, SCRAM-SHA-512
     * and PLAIN (checked against either mechanism's credential) work.
     */
    @Test
    void userWithOneMechanism() throws Exception {
        upsert(broker, "erin", "erin-secret", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096));
        String topic = "one-mechanism";
        Clients.createTopic(broker, topic, 1, Map.of());
        assertSaslAuthenticationFails(broker, SASL_SSL, security(SASL_SSL, "SCRAM-SHA-256", "erin", "erin-secret"), topic,
                "erin (SCRAM-SHA-512 only) with SCRAM-SHA-256");
        produceOne(broker, SASL_SSL, security(SASL_SSL, "SCRAM-SHA-512", "erin", "erin-secret"), topic);
        produceOne(broker, SASL_PLAINTEXT, security(SASL_PLAINTEXT, "PLAIN", "erin", "erin-secret"), topic);
        assertEquals(2, endOffset(broker, topic), log(broker));
    }

    /**
     * alterUserScramCredentials with UserScramCredentialDeletion: after one mechanism's deletion
     * only the other authenticates; after both, describe answers ResourceNotFoundException, the
     * user is not listed, and neither SCRAM mechanism nor PLAIN authenticates. A new password
     * replaces the old one.
     */
    @Test
    void deletedUserCannotAuthenticate() throws Exception {
        String user = "carol";
        String topic = "deleted-user";
        Clients.createTopic(broker, topic, 1, Map.of());
        upsert(broker, user, "carol-1", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096));
        produceOne(broker, SASL_SSL, security(SASL_SSL, "SCRAM-SHA-256", user, "carol-1"), topic);

        // A new password: the old one no longer works.
        upsert(broker, user, "carol-2", new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096));
        assertSaslAuthenticationFails(broker, SASL_SSL, security(SASL_SSL, "SCRAM-SHA-256", user, "carol-1"), topic,
                "carol's old password after a new one was set");
        produceOne(broker, SASL_SSL, security(SASL_SSL, "SCRAM-SHA-512", user, "carol-2"), topic);

        try (Admin admin = admin(broker, PLAINTEXT, new Properties())) {
            alter(admin, new UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512));
            assertEquals(List.of("SCRAM_SHA_256/4096"), credentials(admin.describeUserScramCredentials(List.of(user))
                    .description(user).get(TIMEOUT_S, TimeUnit.SECONDS)), log(broker));
            assertSaslAuthenticationFails(broker, SASL_SSL, security(SASL_SSL, "SCRAM-SHA-512", user, "carol-2"), topic,
                    "carol with SCRAM-SHA-512 after its deletion");
            produceOne(broker, SASL_SSL, security(SASL_SSL, "SCRAM-SHA-256", user, "carol-2"), topic);

            alter(admin, new UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_256));
            ExecutionException e = assertThrows(ExecutionException.class, () -> admin.describeUserScramCredentials(List.of(user))
                    .description(user).get(TIMEOUT_S, TimeUnit.SECONDS), "describe of a deleted user");
            assertInstanceOf(ResourceNotFoundException.class, e.getCause(), "describe of a deleted user");
            Map<String, UserScramCredentialsDescription> all = admin.describeUserScramCredentials().all()
                    .get(TIMEOUT_S, TimeUnit.SECONDS);
            assertFalse(all.containsKey(user), "a deleted user is still listed: " + all.keySet());
            assertTrue(all.containsKey(USER), "the other users are still listed: " + all.keySet());
        }
        assertSaslAuthenticationFails(broker, SASL_SSL, security(SASL_SSL, "SCRAM-SHA-256", user, "carol-2"), topic,
                "deleted carol with SCRAM-SHA-256");
        assertSaslAuthenticationFails(broker, SASL_PLAINTEXT, security(SASL_PLAINTEXT, "PLAIN", user, "carol-2"), topic,
                "deleted carol with PLAIN");
        assertEquals(3, endOffset(broker, topic), log(broker));
    }

    /**
     * Mutual TLS ({@code --ssl-client-auth required}): a client presenting a certificate of the
     * CA in {@code --ssl-ca-file} produces and consumes over SSL, and over SASL_SSL with SCRAM
     * (PLAIN is not enabled there: UnsupportedSaslMechanismException); a client presenting no
     * certificate, or one signed by another CA of the same name, fails with
     * SslAuthenticationException (the broker's alert is certificate_required, or its verdict on
     * the impostor) and no record is accepted.
     */
    @Test
    void mutualTls() throws Exception {
        Properties withCert = security(SSL, null, null, null);
        withCert.putAll(keystore(PKI.clientKeystore));
        roundTrip(mtls, SSL, withCert, "mtls-topic");

        Properties saslWithCert = security(SASL_SSL, "SCRAM-SHA-256", USER, PASSWORD);
        saslWithCert.putAll(keystore(PKI.clientKeystore));
        String topic = "mtls-refused";
        Clients.createTopic(mtls, topic, 1, Map.of());
        produceOne(mtls, SASL_SSL, saslWithCert, topic);

        Properties plain = security(SASL_SSL, "PLAIN", USER, PASSWORD);
        plain.putAll(keystore(PKI.clientKeystore));
        try (Admin admin = admin(mtls, SASL_SSL, plain)) {
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> admin.listTopics().names().get(TIMEOUT_S, TimeUnit.SECONDS), "PLAIN where it is not enabled");
            assertInstanceOf(UnsupportedSaslMechanismException.class, e.getCause(), "PLAIN where it is not enabled");
        }

        Properties rogue = security(SSL, null, null, null);
        rogue.putAll(keystore(PKI.rogueKeystore));
        Map<String, Properties> refused = new LinkedHashMap<>();
        refused.put("no client certificate", security(SSL, null, null, null));
        refused.put("a client certificate of another CA of the same name", rogue);
        for (Map.Entry<String, Properties> c : refused.entrySet()) {
            String what = "SSL with " + c.getKey() + " (--ssl-client-auth required)";
            int logStart = mtls.log().length();
            Properties pp = producerProps(mtls, SSL, c.getValue());
            pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 10_000);
            try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
                ExecutionException e = assertThrows(ExecutionException.class,
                        () -> p.send(new ProducerRecord<>(topic, "k", "refused")).get(TIMEOUT_S, TimeUnit.SECONDS), what);
                assertInstanceOf(SslAuthenticationException.class, e.getCause(), what);
            }
            try (Admin admin = admin(mtls, SSL, c.getValue())) {
                ExecutionException e = assertThrows(ExecutionException.class,
                        () -> admin.listTopics().names().get(TIMEOUT_S, TimeUnit.SECONDS), what);
                assertInstanceOf(SslAuthenticationException.class, e.getCause(), what);
            }
            String failures = mtls.log().substring(logStart);
            boolean noCert = failures.contains("peer sent no certificates");
            assertTrue(failures.contains("TLS handshake failed") && noCert == c.getKey().startsWith("no "),
                    "the broker's log for " + what + ":\n" + failures);
        }
        assertEquals(1, endOffset(mtls, topic), "only the authenticated record is in " + topic + "\n" + log(mtls));
    }

    /**
     * KIP-368: with {@code --connections-max-reauth-ms 2000} a producer and a group consumer on
     * SASL_SSL (SCRAM-SHA-256) keep working for over 6 s, one record every 200 ms; the clients
     * re-authenticate on their connections (their own metrics count it) and the broker closes
     * none for an expired session.
     */
    @Test
    void reauthenticationKeepsClientsWorking() throws Exception {
        String topic = "reauth-topic";
        Clients.createTopic(reauth, topic, 1, Map.of());
        Properties sec = security(SASL_SSL, "SCRAM-SHA-256", USER, PASSWORD);
        Properties cp = consumerProps(reauth, SASL_SSL, sec);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, "reauth-group");
        List<String> sent = new ArrayList<>();
        List<String> read = new ArrayList<>();
        double okBefore = authentications(reauth, SASL_SSL, "SCRAM-SHA-256", "ok");
        int logStart = reauth.log().length();
        try (KafkaProducer<String, String> p = new KafkaProducer<>(producerProps(reauth, SASL_SSL, sec));
                KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(topic));
            long end = System.currentTimeMillis() + 6_500;
            for (int i = 0; System.currentTimeMillis() < end; i++) {
                String v = "r" + i;
                p.send(new ProducerRecord<>(topic, "k", v)).get(TIMEOUT_S, TimeUnit.SECONDS);
                sent.add(v);
                c.poll(Duration.ofMillis(200)).forEach(r -> read.add(r.value()));
            }
            if (read.size() < sent.size()) {
                Clients.pollN(c, sent.size() - read.size()).forEach(r -> read.add(r.value()));
            }
            c.commitSync(Duration.ofSeconds(TIMEOUT_S));
            assertEquals(sent, read, "records read across re-authentications\n" + log(reauth));
            for (Map.Entry<String, Map<MetricName, ? extends Metric>> m : Map.of("producer", p.metrics(), "consumer", c.metrics()).entrySet()) {
                double ok = clientMetric(m.getValue(), "successful-reauthentication-total");
                double failed = clientMetric(m.getValue(), "failed-reauthentication-total");
                assertTrue(ok >= 2, "the " + m.getKey() + " re-authenticated " + ok + " times in 6.5 s with 2 s sessions\n" + log(reauth));
                assertEquals(0, failed, "the " + m.getKey() + "'s failed re-authentications\n" + log(reauth));
            }
        }
        double ok = authentications(reauth, SASL_SSL, "SCRAM-SHA-256", "ok") - okBefore;
        assertTrue(ok >= 6, "spate counted " + ok + " successful SCRAM-SHA-256 authentications on SASL_SSL\n" + reauth.metrics());
        assertFalse(reauth.log().substring(logStart).contains("SASL session expired"),
                "the broker closed a connection for an expired session\n"
                + log(reauth));
    }

    /**
     * What a client that does not re-authenticate meets, by hand on a socket to SASL_PLAINTEXT:
     * a Metadata request before authenticating closes the connection; after SaslHandshake and
     * SaslAuthenticate (PLAIN) the answer gives a session lifetime of at most 2 s, Metadata is
     * answered, and once the lifetime has passed the next Metadata closes the connection.
     */
    @Test
    void expiredSessionClosesConnection() throws Exception {
        int port = reauth.port(SASL_PLAINTEXT);
        try (Socket s = new Socket("127.0.0.1", port)) {
            s.setSoTimeout(10_000);
            Raw raw = new Raw(s);
            raw.send(MetadataRequest.Builder.allTopics().build((short) 12), 12);
            assertTrue(raw.closed(), "Metadata before authenticating was not refused by closing the connection\n" + log(reauth));
        }
        try (Socket s = new Socket("127.0.0.1", port)) {
            s.setSoTimeout(10_000);
            Raw raw = new Raw(s);
            SaslHandshakeResponse hs = (SaslHandshakeResponse) raw.call(
                    new SaslHandshakeRequest.Builder(new SaslHandshakeRequestData().setMechanism("PLAIN")).build((short) 1));
            assertEquals(Errors.NONE, hs.error(), "SaslHandshake PLAIN: " + hs.data());
            byte[] token = ("\0" + USER + "\0" + PASSWORD).getBytes(StandardCharsets.UTF_8);
            SaslAuthenticateResponse auth = (SaslAuthenticateResponse) raw.call(
                    new SaslAuthenticateRequest.Builder(new SaslAuthenticateRequestData().setAuthBytes(token)).build((short) 2));
            assertEquals(Errors.NONE, auth.error(), "SaslAuthenticate PLAIN: " + auth.data());
            long lifetime = auth.sessionLifetimeMs();
            long authenticatedAt = System.currentTimeMillis();
            assertTrue(lifetime > 0 && lifetime <= 2000, "session lifetime " + lifetime + " ms with --connections-max-reauth-ms 2000");
            MetadataResponse md = (MetadataResponse) raw.call(
                    new MetadataRequest.Builder(new MetadataRequestData().setTopics(List.of())).build((short) 12));
            assertEquals(List.of(port), md.brokers().stream().map(Node::port).toList(),
                    "Metadata on SASL_PLAINTEXT gives that listener's address");
            Thread.sleep(Math.max(0, authenticatedAt + lifetime + 500 - System.currentTimeMillis()));
            raw.send(new MetadataRequest.Builder(new MetadataRequestData().setTopics(List.of())).build((short) 12), 12);
            assertTrue(raw.closed(), "Metadata " + lifetime + " ms after the session began was answered\n" + log(reauth));
        }
        assertTrue(reauth.log().contains("SASL session expired"), "the broker did not log the expired session\n" + log(reauth));
    }

    // ---- client configurations ----

    /**
     * The security settings of a client on listener {@code protocol}: the CA as a PEM truststore
     * for SSL and SASL_SSL, {@code mechanism} and a JAAS login of {@code user} for the SASL ones.
     */
    private static Properties security(String protocol, String mechanism, String user, String password) {
        Properties p = new Properties();
        p.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, protocol);
        if (protocol.endsWith(SSL)) {
            p.put(SslConfigs.SSL_TRUSTSTORE_TYPE_CONFIG, "PEM");
            p.put(SslConfigs.SSL_TRUSTSTORE_LOCATION_CONFIG, PKI.caCert.toString());
        }
        if (protocol.startsWith("SASL")) {
            String module = mechanism.equals("PLAIN") ? "org.apache.kafka.common.security.plain.PlainLoginModule"
                    : "org.apache.kafka.common.security.scram.ScramLoginModule";
            p.put(SaslConfigs.SASL_MECHANISM, mechanism);
            p.put(SaslConfigs.SASL_JAAS_CONFIG, module + " required username=\"" + user + "\" password=\"" + password + "\";");
        }
        return p;
    }

    /** A PKCS12 keystore holding a client certificate and its key. */
    private static Properties keystore(Path p12) {
        Properties p = new Properties();
        p.put(SslConfigs.SSL_KEYSTORE_TYPE_CONFIG, "PKCS12");
        p.put(SslConfigs.SSL_KEYSTORE_LOCATION_CONFIG, p12.toString());
        p.put(SslConfigs.SSL_KEYSTORE_PASSWORD_CONFIG, Pki.PASSWORD);
        p.put(SslConfigs.SSL_KEY_PASSWORD_CONFIG, Pki.PASSWORD);
        return p;
    }

    private static Properties producerProps(SpateBroker b, String protocol, Properties security) {
        Properties p = Clients.producer(b, true);
        p.putAll(security);
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap(protocol));
        return p;
    }

    private static Properties consumerProps(SpateBroker b, String protocol, Properties security) {
        Properties p = Clients.consumer(b, true);
        p.putAll(security);
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap(protocol));
        return p;
    }

    private static Admin admin(SpateBroker b, String protocol, Properties security) {
        Properties p = new Properties();
        p.putAll(security);
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, b.bootstrap(protocol));
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
        return Admin.create(p);
    }

    // ---- helpers ----

    private static void upsert(SpateBroker b, String user, String password, ScramCredentialInfo... infos) throws Exception {
        try (Admin admin = admin(b, PLAINTEXT, new Properties())) {
            alter(admin, Stream.of(infos).map(i -> (UserScramCredentialAlteration) new UserScramCredentialUpsertion(user, i, password))
                    .toArray(UserScramCredentialAlteration[]::new));
        }
    }

    private static void alter(Admin admin, UserScramCredentialAlteration... alterations) throws Exception {
        admin.alterUserScramCredentials(List.of(alterations)).all().get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    /** A user's credentials as {@code MECHANISM/iterations}, sorted. */
    private static List<String> credentials(UserScramCredentialsDescription d) {
        return d.credentialInfos().stream().map(i -> i.mechanism() + "/" + i.iterations()).sorted().toList();
    }

    /**
     * Creates {@code topic} (two partitions) with an admin client on listener {@code protocol},
     * whose describeCluster names that listener's address; produces 20 records there and reads
     * them back with a group member, which commits; the group's offsets are read back there.
     */
    private static void roundTrip(SpateBroker b, String protocol, Properties security, String topic) throws Exception {
        try (Admin admin = admin(b, protocol, security)) {
            Collection<Node> nodes = admin.describeCluster().nodes().get(TIMEOUT_S, TimeUnit.SECONDS);
            assertEquals(List.of("127.0.0.1:" + b.port(protocol)), nodes.stream().map(n -> n.host() + ":" + n.port()).toList(),
                    "describeCluster on " + protocol + " gives that listener's address");
            admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get(TIMEOUT_S, TimeUnit.SECONDS);
        }
        Map<Integer, List<String>> sent = new TreeMap<>();
        try (KafkaProducer<String, String> p = new KafkaProducer<>(producerProps(b, protocol, security))) {
            for (int i = 0; i < 20; i++) {
                String v = protocol + "-" + i;
                p.send(new ProducerRecord<>(topic, i % 2, "k" + i, v)).get(TIMEOUT_S, TimeUnit.SECONDS);
                sent.computeIfAbsent(i % 2, k -> new ArrayList<>()).add(v);
            }
        }
        Properties cp = consumerProps(b, protocol, security);
        String group = topic + "-group";
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        Map<Integer, List<String>> read = new TreeMap<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(topic));
            for (ConsumerRecord<String, String> r : Clients.pollN(c, 20)) {
                read.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r.value());
            }
            c.commitSync(Duration.ofSeconds(TIMEOUT_S));
        }
        assertEquals(sent, read, "records read back over " + protocol + "\n" + log(b));
        try (Admin admin = admin(b, protocol, security)) {
            Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS);
            assertEquals(Map.of(new TopicPartition(topic, 0), 10L, new TopicPartition(topic, 1), 10L),
                    offsets.entrySet().stream().collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset())),
                    "committed offsets over " + protocol);
        }
    }

    /** Produces one record to {@code topic} on listener {@code protocol}, failing the test unless it is acknowledged. */
    private static void produceOne(SpateBroker b, String protocol, Properties security, String topic) throws Exception {
        try (KafkaProducer<String, String> p = new KafkaProducer<>(producerProps(b, protocol, security))) {
            p.send(new ProducerRecord<>(topic, "k", "v")).get(TIMEOUT_S, TimeUnit.SECONDS);
        }
    }

    /**
     * A producer's send, an admin client's call and a consumer's poll with {@code security} on
     * listener {@code protocol} each fail with SaslAuthenticationException.
     */
    private static void assertSaslAuthenticationFails(SpateBroker b, String protocol, Properties security, String topic,
            String what) {
        try (KafkaProducer<String, String> p = new KafkaProducer<>(producerProps(b, protocol, security))) {
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> p.send(new ProducerRecord<>(topic, "k", "unauthenticated")).get(TIMEOUT_S, TimeUnit.SECONDS),
                    "producer: " + what);
            assertInstanceOf(SaslAuthenticationException.class, e.getCause(), "producer: " + what);
        }
        try (Admin admin = admin(b, protocol, security)) {
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> admin.listTopics().names().get(TIMEOUT_S, TimeUnit.SECONDS), "admin: " + what);
            assertInstanceOf(SaslAuthenticationException.class, e.getCause(), "admin: " + what);
        }
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(b, protocol, security))) {
            c.assign(List.of(new TopicPartition(topic, 0)));
            assertThrows(SaslAuthenticationException.class, () -> {
                long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
                while (System.currentTimeMillis() < deadline) {
                    c.poll(Duration.ofMillis(200));
                }
            }, "consumer: " + what);
        }
    }

    /** The end offset of partition 0 of {@code topic}, read on the PLAINTEXT listener. */
    private static long endOffset(SpateBroker b, String topic) {
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(b, PLAINTEXT, new Properties()))) {
            TopicPartition tp = new TopicPartition(topic, 0);
            return c.endOffsets(List.of(tp)).get(tp);
        }
    }

    private static double authentications(SpateBroker b, String protocol, String mechanism, String outcome) throws Exception {
        return SpateBroker.metricSum(b.metrics(), "spate_authentications_total", "listener=\"" + protocol + "\"",
                "mechanism=\"" + mechanism + "\"", "outcome=\"" + outcome + "\"");
    }

    private static double failedAuthentications(SpateBroker b, String protocol, String mechanism) throws Exception {
        return authentications(b, protocol, mechanism, "failed");
    }

    /** The sum of a client's metric {@code name} over its groups and tags. */
    private static double clientMetric(Map<MetricName, ? extends Metric> metrics, String name) {
        double sum = 0;
        for (Map.Entry<MetricName, ? extends Metric> e : metrics.entrySet()) {
            if (e.getKey().name().equals(name) && e.getValue().metricValue() instanceof Double d) {
                sum += d;
            }
        }
        return sum;
    }

    private static String log(SpateBroker b) {
        return "broker log " + b.logFile() + ":\n" + b.logTail(30);
    }

    /** Kafka requests written by hand on a socket, with the client library's own encoding. */
    private static final class Raw {
        private final OutputStream out;
        private final DataInputStream in;
        private int correlationId;

        Raw(Socket s) throws IOException {
            out = s.getOutputStream();
            in = new DataInputStream(s.getInputStream());
        }

        RequestHeader send(AbstractRequest request, int version) throws IOException {
            RequestHeader header = new RequestHeader(request.apiKey(), (short) version, "spate-raw", ++correlationId);
            ByteBuffer body = request.serializeWithHeader(header);
            byte[] frame = new byte[4 + body.remaining()];
            ByteBuffer.wrap(frame).putInt(body.remaining()).put(body);
            out.write(frame);
            out.flush();
            return header;
        }

        AbstractResponse call(AbstractRequest request) throws IOException {
            RequestHeader header = send(request, request.version());
            int size = in.readInt();
            byte[] body = new byte[size];
            in.readFully(body);
            return AbstractResponse.parseResponse(ByteBuffer.wrap(body), header);
        }

        /** Whether the broker closed the connection (rather than answer) within the socket's timeout. */
        boolean closed() throws IOException {
            try {
                int b = in.read();
                return b < 0;
            } catch (SocketTimeoutException e) {
                return false;
            } catch (IOException e) { // a reset
                return true;
            }
        }
    }

    /**
     * The test PKI, made with the {@code openssl} CLI in a temporary directory (deleted when the
     * JVM exits): a CA; a server certificate for DNS:localhost and IP:127.0.0.1 signed by it
     * (PEM, for {@code --ssl-cert-file} and {@code --ssl-key-file}); a client certificate signed
     * by it and one signed by another CA of the same name (another key), each in a PKCS12 keystore.
     */
    static final class Pki {
        static final String PASSWORD = "spate-test";
        final Path dir;
        final Path caCert;
        final Path serverCert;
        final Path serverKey;
        final Path clientKeystore;
        final Path rogueKeystore;

        private Pki(Path dir) {
            this.dir = dir;
            caCert = dir.resolve("ca.pem");
            serverCert = dir.resolve("server.pem");
            serverKey = dir.resolve("server.key");
            clientKeystore = dir.resolve("client.p12");
            rogueKeystore = dir.resolve("rogue-client.p12");
        }

        static Pki create() {
            try {
                Path dir = Files.createTempDirectory("spate-it-pki-");
                Runtime.getRuntime().addShutdownHook(new Thread(() -> deleteTree(dir)));
                Pki pki = new Pki(dir);
                pki.ca("ca", "/CN=Spate Test CA");
                // Another CA of the same name: Java's key manager offers only a certificate whose
                // issuer the server's CertificateRequest names, so the impostor's must bear it.
                pki.ca("rogue-ca", "/CN=Spate Test CA");
                pki.leaf("server", "ca", "/CN=localhost",
                        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n");
                pki.leaf("client", "ca", "/CN=spate-client", "extendedKeyUsage=clientAuth\n");
                pki.leaf("rogue-client", "rogue-ca", "/CN=rogue-client", "extendedKeyUsage=clientAuth\n");
                pki.pkcs12("client", "ca");
                pki.pkcs12("rogue-client", "rogue-ca");
                return pki;
            } catch (Exception e) {
                throw new IllegalStateException("making the test PKI with openssl: " + e.getMessage(), e);
            }
        }

        private void ca(String name, String subject) throws Exception {
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
                    "-keyout", name + ".key", "-out", name + ".pem", "-subj", subject,
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
        }

        private void leaf(String name, String ca, String subject, String extensions) throws Exception {
            Files.writeString(dir.resolve(name + ".ext"), "basicConstraints=critical,CA:FALSE\n"
                    + "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    + "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n" + extensions);
            openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", subject);
            openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
                    "-set_serial", Long.toString(System.nanoTime() & Long.MAX_VALUE), "-days", "2", "-sha256",
                    "-extfile", name + ".ext", "-out", name + ".pem");
        }

        /** {@code name.p12}: the key {@code name.key} (PKCS#8 PEM) with the chain {@code name.pem}, {@code ca.pem}. */
        private void pkcs12(String name, String ca) throws Exception {
            String pem = Files.readString(dir.resolve(name + ".key"));
            String base64 = pem.replaceAll("-----(BEGIN|END) PRIVATE KEY-----", "").replaceAll("\\s", "");
            PrivateKey key = KeyFactory.getInstance("RSA").generatePrivate(new PKCS8EncodedKeySpec(Base64.getDecoder().decode(base64)));
            CertificateFactory cf = CertificateFactory.getInstance("X.509");
            List<Certificate> chain = new ArrayList<>();
            for (String f : List.of(name + ".pem", ca + ".pem")) {
                try (InputStream in = Files.newInputStream(dir.resolve(f))) {
                    chain.add(cf.generateCertificate(in));
                }
            }
            KeyStore ks = KeyStore.getInstance("PKCS12");
            ks.load(null, null);
            ks.setKeyEntry(name, key, PASSWORD.toCharArray(), chain.toArray(new Certificate[0]));
            try (OutputStream out = Files.newOutputStream(dir.resolve(name + ".p12"))) {
                ks.store(out, PASSWORD.toCharArray());
            }
        }

        private void openssl(String... args) throws IOException, InterruptedException {
            List<String> cmd = new ArrayList<>(List.of("openssl"));
            cmd.addAll(List.of(args));
            Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            if (!p.waitFor(30, TimeUnit.SECONDS) || p.exitValue() != 0) {
                throw new IOException(String.join(" ", cmd) + " failed:\n" + out);
            }
        }

        private static void deleteTree(Path dir) {
            try (Stream<Path> paths = Files.walk(dir)) {
                for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
                    Files.deleteIfExists(p);
                }
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }
}
