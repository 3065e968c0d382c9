package spatego

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The broker every test in this package talks to, started by TestMain.
var broker *Broker

const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
)

// TestMain starts one `spate serve` on free loopback ports with a fresh data directory, runs the
// tests against it, then stops it with SIGTERM and fails the run unless it exits 0 within 30 s.
// The data directory is always removed; the broker's stderr is kept (and its path printed) when
// anything failed, or always under $SPATE_LOG_DIR.
func TestMain(m *testing.M) {
	// The broker gets SIGKILL if this process dies (a panic, `go test -timeout`). The parent-death
	// signal follows the OS thread that started the child, so that thread must outlive the run.
	runtime.LockOSThread()

	b, err := StartBroker(spateBin())
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL setup: %v\n", err)
		os.Exit(1)
	}
	broker = b
	code := m.Run()
	if err := b.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL teardown: %v\n", err)
		code = 1
	}
	b.CleanUp(code != 0)
	os.Exit(code)
}

// spateBin is the broker binary: $SPATE_BIN, or the debug build.
func spateBin() string {
	if bin := os.Getenv("SPATE_BIN"); bin != "" {
		return bin
	}
	return filepath.Join("..", "..", "target", "debug", "spate")
}

// Broker is a running `spate serve`.
type Broker struct {
	Addr    string // 127.0.0.1:port, the Kafka listener (the first of --listeners, if given)
	root    string // temporary directory holding data/ and, unless SPATE_LOG_DIR is set, the log
	dataDir string
	logPath string
	logFile *os.File
	cmd     *exec.Cmd
	args    []string

	// Listeners are the addresses (host:port) of the listeners an extra `--listeners` named,
	// by name (the security protocol); nil without it.
	Listeners map[string]string

	waitOnce sync.Once
	exited   chan struct{} // closed when the process has exited
	waitErr  error
}

// StartBroker starts bin as `spate serve` on a free 127.0.0.1 port, with the flags below and
// then extra (`--cores 2` unless extra names --cores), and waits (30 s at most) until it logs
// "spate ready" or its port accepts connections. With `--listeners NAME://host:port,...` among
// extra (free ports chosen by the caller) there is no --listen: Addr is the first listener's
// address and Listeners has each one's.
func StartBroker(bin string, extra ...string) (*Broker, error) {
	abs, err := filepath.Abs(bin)
	if err != nil {
		return nil, err
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("no executable spate binary at %s (set SPATE_BIN)", abs)
	}
	root, err := os.MkdirTemp("", "spate-go-")
	if err != nil {
		return nil, err
	}
	b := &Broker{root: root, dataDir: filepath.Join(root, "data"), exited: make(chan struct{})}
	if err := os.Mkdir(b.dataDir, 0o755); err != nil {
		return nil, err
	}
	logDir := root
	if d := os.Getenv("SPATE_LOG_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		logDir = d
	}
	b.logPath = filepath.Join(logDir, "spate-go-"+time.Now().Format("20060102-150405")+"-broker.stderr.log")
	if b.logFile, err = os.Create(b.logPath); err != nil {
		return nil, err
	}
	b.args = []string{abs, "serve"}
	if i := slices.Index(extra, "--listeners"); i >= 0 && i+1 < len(extra) {
		b.Listeners = map[string]string{}
		for j, l := range strings.Split(extra[i+1], ",") {
			name, addr, ok := strings.Cut(l, "://")
			if !ok {
				return nil, fmt.Errorf("listener %q is not NAME://host:port", l)
			}
			b.Listeners[name] = addr
			if j == 0 {
				b.Addr = addr
			}
		}
	} else {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		b.args = append(b.args, "--listen", b.Addr)
	}
	b.args = append(b.args,
		"--admin-listen", "127.0.0.1:0",
		"--data-dir", b.dataDir,
		// No 3 s wait before a new group's first rebalance, as in the Java suite.
		"--group-initial-rebalance-delay-ms", "0",
		// KIP-848 members heartbeat every second instead of every 5 s, so that an assignment
		// change reaches them quickly.
		"--group-consumer-heartbeat-interval-ms", "1000",
	)
	if !slices.Contains(extra, "--cores") {
		b.args = append(b.args, "--cores", "2")
	}
	b.args = append(b.args, extra...)
	b.cmd = exec.Command(b.args[0], b.args[1:]...)
	b.cmd.Stdout = b.logFile
	b.cmd.Stderr = b.logFile
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		b.CleanUp(true)
		return nil, fmt.Errorf("starting %s: %w", strings.Join(b.args, " "), err)
	}
	go b.wait()

	deadline := time.Now().Add(readyTimeout)
	for {
		if strings.Contains(b.Log(), "spate ready") {
			return b, nil
		}
		select {
		case <-b.exited:
			tail := b.LogTail(40)
			b.CleanUp(true)
			return nil, fmt.Errorf("spate exited (%v) before it was ready; %s\nlog %s:\n%s",
				b.waitErr, strings.Join(b.args, " "), b.logPath, tail)
		default:
		}
		if c, err := net.DialTimeout("tcp", b.Addr, 100*time.Millisecond); err == nil {
			c.Close()
			return b, nil
		}
		if time.Now().After(deadline) {
			_ = b.cmd.Process.Kill()
			<-b.exited
			tail := b.LogTail(40)
			b.CleanUp(true)
			return nil, fmt.Errorf("spate not ready after %v; %s\nlog %s:\n%s",
				readyTimeout, strings.Join(b.args, " "), b.logPath, tail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *Broker) wait() {
	b.waitOnce.Do(func() {
		b.waitErr = b.cmd.Wait()
		close(b.exited)
	})
}

// Alive says whether the broker process is still running.
func (b *Broker) Alive() bool {
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM (a graceful shutdown) and checks that the broker exits 0 within 30 s; if it
// does not exit it is killed.
func (b *Broker) Stop() error {
	if !b.Alive() {
		return fmt.Errorf("spate had already exited (%v); log %s:\n%s", b.waitErr, b.logPath, b.LogTail(40))
	}
	if err := b.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-b.exited:
	case <-time.After(stopTimeout):
		_ = b.cmd.Process.Kill()
		<-b.exited
		return fmt.Errorf("spate did not exit within %v of SIGTERM (killed); log %s:\n%s", stopTimeout, b.logPath, b.LogTail(30))
	}
	if b.waitErr != nil {
		return fmt.Errorf("spate exited with %v after SIGTERM, not status 0; log %s:\n%s", b.waitErr, b.logPath, b.LogTail(30))
	}
	return nil
}

// CleanUp removes the data directory, and the broker's stderr unless keepLog (then its path is
// printed) or it was written under $SPATE_LOG_DIR (then it always stays).
func (b *Broker) CleanUp(keepLog bool) {
	if b.logFile != nil {
		b.logFile.Close()
	}
	_ = os.RemoveAll(b.dataDir)
	if keepLog {
		fmt.Fprintf(os.Stderr, "spate's stderr is kept in %s\n", b.logPath)
	}
	if keepLog && filepath.Dir(b.logPath) == b.root {
		return
	}
	_ = os.RemoveAll(b.root)
}

// Metrics is the broker's /metrics (Prometheus text), from the admin listener it logged.
func (b *Broker) Metrics() (string, error) {
	m := regexp.MustCompile(`admin HTTP listening.* admin=(\S+)`).FindStringSubmatch(b.Log())
	if m == nil {
		return "", fmt.Errorf("no admin address in the broker's log %s", b.logPath)
	}
	resp, err := http.Get("http://" + m[1] + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// metricSum sums metric name in a /metrics text over the series whose labels contain every one
// of labels (each as written there, e.g. `kind="incremental"`).
func metricSum(metrics, name string, labels ...string) float64 {
	sum := 0.0
	for _, line := range strings.Split(metrics, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		all := true
		for _, l := range labels {
			all = all && strings.Contains(line, l)
		}
		if v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64); all && err == nil {
			sum += v
		}
	}
	return sum
}

// Log is the broker's stderr so far.
func (b *Broker) Log() string {
	data, _ := os.ReadFile(b.logPath)
	return string(data)
}

// LogSize is the length of the broker's stderr so far, for LogSince.
func (b *Broker) LogSize() int64 {
	st, err := os.Stat(b.logPath)
	if err != nil {
		return 0
	}
	return st.Size()
}

// LogTail is the last n lines of the broker's stderr.
func (b *Broker) LogTail(n int) string {
	return lastLines(b.Log(), n)
}

// LogSince is the broker's stderr written after offset (from LogSize), at most its last n lines.
func (b *Broker) LogSince(offset int64, n int) string {
	data, _ := os.ReadFile(b.logPath)
	if offset > int64(len(data)) {
		offset = 0
	}
	return lastLines(string(data[offset:]), n)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// T wraps a test with what a failure report needs: a buffer of the franz-go clients' log lines
// and the broker log written during the test. Both are printed when the test fails, and the test
// fails if the broker died during it.
type T struct {
	*testing.T
	logStart  int64
	clientLog *ringLog
}

// begin sets up t for a test against the shared broker.
func begin(t *testing.T) *T {
	t.Helper()
	if !broker.Alive() {
		t.Fatalf("spate is not running (%v); log %s:\n%s", broker.waitErr, broker.logPath, broker.LogTail(40))
	}
	tt := &T{T: t, logStart: broker.LogSize(), clientLog: newRingLog(400)}
	t.Cleanup(func() {
		if !broker.Alive() {
			t.Errorf("SPATE DIED during this test (%v)", broker.waitErr)
		}
		if t.Failed() {
			t.Logf("franz-go log (last lines; SPATE_GO_DEBUG=1 for debug level):\n%s", tt.clientLog.String(120))
			t.Logf("spate's stderr during this test (last 60 lines; all of it in %s):\n%s",
				broker.logPath, broker.LogSince(tt.logStart, 60))
		}
	})
	return tt
}

// ringLog keeps the last lines written to it.
type ringLog struct {
	mu    sync.Mutex
	lines []string
	max   int
}

func newRingLog(max int) *ringLog { return &ringLog{max: max} }

func (r *ringLog) add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	if len(r.lines) > r.max {
		r.lines = r.lines[len(r.lines)-r.max:]
	}
}

func (r *ringLog) String(n int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	lines := r.lines
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	var buf bytes.Buffer
	for _, l := range lines {
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	return buf.String()
}
