package spate.it;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * A real {@code spate serve} for one test class: register it as a static field with
 * {@code @RegisterExtension}. It starts the broker on free loopback ports with a fresh data
 * directory, waits (30 s at most) for "spate ready" on its stderr, and after the class stops it
 * with SIGTERM ({@link Process#destroy()}), checks that it exited 0, and deletes the data
 * directory. The broker's stderr stays in target/spate-logs/ for reading after a failure.
 */
public final class SpateBroker implements BeforeAllCallback, AfterAllCallback {
    private static final long READY_TIMEOUT_MS = 30_000;
    private static final long STOP_TIMEOUT_MS = 30_000;

    private final List<String> extraArgs;
    private Process process;
    private Path dataDir;
    private Path logFile;
    private int port;
    private int adminPort;

    /** @param extraArgs more {@code spate serve} flags, after the standard ones */
    public SpateBroker(String... extraArgs) {
        this.extraArgs = List.of(extraArgs);
    }

    public String bootstrap() {
        return "127.0.0.1:" + port;
    }

    public int port() {
        return port;
    }

    public Path dataDir() {
        return dataDir;
    }

    public Path logFile() {
        return logFile;
    }

    /** The broker's stderr so far. */
    public String log() {
        try {
            return Files.readString(logFile, StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** The last {@code n} lines of the broker's stderr, for failure messages. */
    public String logTail(int n) {
        List<String> lines = log().lines().toList();
        return String.join("\n", lines.subList(Math.max(0, lines.size() - n), lines.size()));
    }

    @Override
    public void beforeAll(ExtensionContext context) throws Exception {
        start(context.getRequiredTestClass().getSimpleName());
    }

    @Override
    public void afterAll(ExtensionContext context) throws Exception {
        stop();
    }

    private void start(String name) throws IOException, InterruptedException {
        Path bin = Paths.get(System.getProperty("spate.bin", "../../target/debug/spate")).toAbsolutePath().normalize();
        if (!Files.isExecutable(bin)) {
            throw new IllegalStateException("no spate binary at " + bin + " (set -Dspate.bin=...)");
        }
        Path logDir = Paths.get(System.getProperty("spate.logdir", "target/spate-logs")).toAbsolutePath();
        Files.createDirectories(logDir);
        String stamp = LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss"));
        logFile = logDir.resolve(name + "-" + stamp + ".stderr.log");
        dataDir = Files.createTempDirectory("spate-it-" + name + "-");
        port = freePort();
        adminPort = freePort();
        while (adminPort == port) {
            adminPort = freePort();
        }
        List<String> cmd = new ArrayList<>(List.of(
                bin.toString(), "serve",
                "--listen", "127.0.0.1:" + port,
                "--admin-listen", "127.0.0.1:" + adminPort,
                "--data-dir", dataDir.toString(),
                "--cores", "2",
                "--group-initial-rebalance-delay-ms", "0"));
        cmd.addAll(extraArgs);
        ProcessBuilder pb = new ProcessBuilder(cmd)
                .redirectErrorStream(false)
                .redirectError(logFile.toFile())
                .redirectOutput(logDir.resolve(name + "-" + stamp + ".stdout.log").toFile());
        process = pb.start();
        Process started = process;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (started.isAlive()) {
                started.destroyForcibly();
            }
        }));
        long deadline = System.currentTimeMillis() + READY_TIMEOUT_MS;
        while (true) {
            if (Files.exists(logFile) && log().contains("spate ready")) {
                return;
            }
            if (!process.isAlive()) {
                String tail = logTail(40);
                cleanUp();
                throw new IllegalStateException("spate exited with status " + process.exitValue()
                        + " before it was ready; " + String.join(" ", cmd) + "\n" + tail);
            }
            if (System.currentTimeMillis() > deadline) {
                String tail = logTail(40);
                process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
                cleanUp();
                throw new IllegalStateException("spate not ready after " + READY_TIMEOUT_MS + " ms; "
                        + String.join(" ", cmd) + "\n" + tail);
            }
            Thread.sleep(50);
        }
    }

    private void stop() throws IOException, InterruptedException {
        if (process == null) {
            return;
        }
        process.destroy(); // SIGTERM: a graceful shutdown
        boolean exited = process.waitFor(STOP_TIMEOUT_MS, TimeUnit.MILLISECONDS);
        if (!exited) {
            process.destroyForcibly().waitFor(10, TimeUnit.SECONDS);
        }
        int status = exited ? process.exitValue() : -1;
        String tail = logTail(30);
        cleanUp();
        if (!exited) {
            throw new AssertionError("spate did not exit within " + STOP_TIMEOUT_MS + " ms of SIGTERM (killed); log "
                    + logFile + ":\n" + tail);
        }
        if (status != 0) {
            throw new AssertionError("spate exited with status " + status + " after SIGTERM; log " + logFile
                    + ":\n" + tail);
        }
    }

    private void cleanUp() throws IOException {
        if (dataDir != null && Files.exists(dataDir)) {
            try (Stream<Path> paths = Files.walk(dataDir)) {
                for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }
}
