package spate.it;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;

/**
 * A Kafka tool (VerifiableProducer, ConnectStandalone...) run as a child JVM on this module's
 * test classpath. Its stdout is read line by line as it comes ({@link #lines()}) and also kept in
 * a file beside the broker logs (target/spate-logs/), as is its stderr, for reading after a failure.
 */
final class ChildJvm implements AutoCloseable {
    private final String name;
    private final Process process;
    private final Path stdoutFile;
    private final Path stderrFile;
    private final List<String> lines = new ArrayList<>();
    private final Thread reader;

    private ChildJvm(String name, Process process, Path stdoutFile, Path stderrFile) {
        this.name = name;
        this.process = process;
        this.stdoutFile = stdoutFile;
        this.stderrFile = stderrFile;
        this.reader = new Thread(this::readStdout, name + "-stdout");
        this.reader.setDaemon(true);
        this.reader.start();
    }

    /**
     * Starts {@code mainClass} with {@code args} in a new JVM on the test classpath.
     *
     * @param name a short name for the log files and messages
     * @param jvmArgs JVM flags (system properties), before the main class
     */
    static ChildJvm start(String name, List<String> jvmArgs, String mainClass, List<String> args) throws IOException {
        Path java = Paths.get(System.getProperty("java.home"), "bin", "java");
        // Surefire runs the tests with a manifest-only jar as java.class.path; the real test
        // classpath is in surefire.test.class.path (and java.class.path outside Surefire).
        String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
        Path logDir = Paths.get(System.getProperty("spate.logdir", "target/spate-logs")).toAbsolutePath();
        Files.createDirectories(logDir);
        String stamp = LocalDateTime.now().format(DateTimeFormatter.ofPattern("yyyyMMdd-HHmmss-SSS"));
        Path out = logDir.resolve(name + "-" + stamp + ".stdout.log");
        Path err = logDir.resolve(name + "-" + stamp + ".stderr.log");
        List<String> cmd = new ArrayList<>();
        cmd.add(java.toString());
        cmd.add("-Xmx256m");
        cmd.add("-XX:TieredStopAtLevel=1"); // starts faster; these tools do little work
        cmd.add("-XX:+UseSerialGC");
        cmd.addAll(jvmArgs);
        cmd.add("-cp");
        cmd.add(cp);
        cmd.add(mainClass);
        cmd.addAll(args);
        Process p = new ProcessBuilder(cmd)
                .redirectError(err.toFile())
                .redirectInput(ProcessBuilder.Redirect.PIPE)
                .start();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (p.isAlive()) {
                p.destroyForcibly();
            }
        }));
        return new ChildJvm(name, p, out, err);
    }

    private void readStdout() {
        try (BufferedReader r = new BufferedReader(new InputStreamReader(process.getInputStream(), StandardCharsets.UTF_8));
             var w = Files.newBufferedWriter(stdoutFile, StandardCharsets.UTF_8)) {
            String line;
            while ((line = r.readLine()) != null) {
                w.write(line);
                w.newLine();
                synchronized (lines) {
                    lines.add(line);
                    lines.notifyAll();
                }
            }
            w.flush();
        } catch (IOException e) {
            // The process went away; what was read stays.
        }
    }

    /** A copy of every stdout line so far. */
    List<String> lines() {
        synchronized (lines) {
            return new ArrayList<>(lines);
        }
    }

    /** Waits (at most {@code timeoutMs}) for a stdout line matching {@code p}; false if none came. */
    boolean awaitLine(Predicate<String> p, long timeoutMs) throws InterruptedException {
        long deadline = System.currentTimeMillis() + timeoutMs;
        int seen = 0;
        synchronized (lines) {
            while (true) {
                for (; seen < lines.size(); seen++) {
                    if (p.test(lines.get(seen))) {
                        return true;
                    }
                }
                long left = deadline - System.currentTimeMillis();
                if (left <= 0 || (!process.isAlive() && !reader.isAlive())) {
                    return false;
                }
                lines.wait(Math.min(left, 200));
            }
        }
    }

    boolean isAlive() {
        return process.isAlive();
    }

    long pid() {
        return process.pid();
    }

    /** Waits for the process to exit and for its stdout to be read to the end; false on timeout. */
    boolean waitFor(long timeoutMs) throws InterruptedException {
        if (!process.waitFor(timeoutMs, TimeUnit.MILLISECONDS)) {
            return false;
        }
        reader.join(5_000);
        return true;
    }

    int exitValue() {
        return process.exitValue();
    }

    /**
     * SIGTERM: the JVM runs its shutdown hooks (the tools close their clients there). Sent through
     * the {@link ProcessHandle}: {@link Process#destroy()} would also close our end of its stdout
     * at once, losing what it prints while it shuts down.
     */
    void terminate() {
        process.toHandle().destroy();
    }

    /** The last {@code n} lines of its stderr, for failure messages. */
    String stderrTail(int n) {
        try {
            List<String> all = Files.readAllLines(stderrFile, StandardCharsets.UTF_8);
            return String.join("\n", all.subList(Math.max(0, all.size() - n), all.size()));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Where its stdout and stderr are kept, for failure messages. */
    String logs() {
        return name + " stdout " + stdoutFile + ", stderr " + stderrFile;
    }

    /** Kills it (SIGKILL) if it still runs: for a test's cleanup after a failure. */
    @Override
    public void close() throws InterruptedException {
        if (process.isAlive()) {
            process.destroyForcibly();
            process.waitFor(10, TimeUnit.SECONDS);
        }
        reader.join(5_000);
    }
}
