// Command fetch-sessions measures what incremental fetch sessions (KIP-227) save a consumer of
// many partitions at a low rate: it creates a topic of -partitions partitions, produces -rate
// records a second spread round-robin over them (each value carrying its send time), and
// consumes all of them with franz-go, with fetch sessions and then without
// (kgo.DisableFetchSessions()), alternating for -rounds rounds. For each run it reports the fetch
// requests a second, the bytes of a fetch request and of its response (franz-go's broker hooks),
// the broker's CPU (utime + stime from /proc/<pid>/stat) and the client's, and the end-to-end
// latency from send to poll, as a markdown table.
//
// With -spate BIN it starts that broker itself (on a temporary data directory, removed at the
// end); with -bootstrap and -pid it measures a broker already running (Spate or Kafka).
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

var (
	spateBin   = flag.String("spate", "", "start this spate binary (else -bootstrap and -pid name a running broker)")
	serveArgs  = flag.String("serve-args", "--cores 2 --segment-preallocate-bytes 0", "more `spate serve` flags with -spate (no preallocation: 16 MiB per partition would be 16 GiB of disk for a few MiB of records)")
	bootstrap  = flag.String("bootstrap", "", "a running broker's address (without -spate)")
	brokerPid  = flag.Int("pid", 0, "that broker's process id, for its CPU (without -spate; 0: not measured)")
	partitions = flag.Int("partitions", 1000, "partitions of the topic")
	rate       = flag.Int("rate", 200, "records produced a second, all partitions together")
	size       = flag.Int("size", 100, "bytes per record value (at least 8: the send time)")
	duration   = flag.Duration("duration", 30*time.Second, "measured time of each run")
	warmup     = flag.Duration("warmup", 5*time.Second, "time before each run's measurement, once its consumer fetches")
	rounds     = flag.Int("rounds", 1, "runs of each mode, alternating (sessions, then none)")
	maxWait    = flag.Duration("fetch-max-wait", 500*time.Millisecond, "the consumer's fetch.max.wait")
)

func main() {
	runtime.LockOSThread()
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fetch-sessions:", err)
		os.Exit(1)
	}
}

func run() error {
	addr, pid := *bootstrap, *brokerPid
	if *spateBin != "" {
		b, err := startSpate(*spateBin, strings.Fields(*serveArgs))
		if err != nil {
			return err
		}
		defer b.stop()
		addr, pid = b.addr, b.cmd.Process.Pid
	}
	if addr == "" {
		return fmt.Errorf("give -spate BIN, or -bootstrap ADDR (and -pid PID)")
	}
	if *size < 8 {
		*size = 8
	}
	topic := fmt.Sprintf("fetch-sessions-%d", time.Now().Unix())
	admin, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return err
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	created, err := kadm.NewClient(admin).CreateTopic(ctx, int32(*partitions), 1, nil, topic)
	if err == nil {
		err = created.Err
	}
	if err != nil {
		return fmt.Errorf("creating %s: %w", topic, err)
	}

	stopProducing, produced, err := produce(addr, topic)
	if err != nil {
		return err
	}
	defer stopProducing()

	var results []result
	for round := 0; round < *rounds; round++ {
		for _, sessions := range []bool{true, false} {
			r, err := measure(addr, topic, pid, sessions)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "round %d, sessions %v: %+v\n", round+1, sessions, r)
			results = append(results, r)
		}
	}
	fmt.Printf("Consuming %d partitions at %d records/s (%d B values), franz-go, fetch.max.wait %v, %v a run after %v of warm-up; %d records produced; broker %s\n\n",
		*partitions, *rate, *size, *maxWait, *duration, *warmup, produced.Load(), brokerName(addr))
	fmt.Println("| fetch sessions | fetches/s | request bytes/fetch | response bytes/fetch | broker CPU (% of a core) | client CPU (% of a core) | e2e p50 ms | e2e p99 ms | e2e max ms | records |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %.1f | %.0f | %.0f | %s | %.1f | %.2f | %.2f | %.2f | %d |\n",
			map[bool]string{true: "on", false: "off"}[r.sessions], r.fetchesPerSec, r.reqBytes, r.respBytes,
			cpuCell(r.brokerCPU), r.clientCPU, r.p50, r.p99, r.max, r.records)
	}
	return nil
}

func brokerName(addr string) string {
	if *spateBin != "" {
		return fmt.Sprintf("%s serve %s", *spateBin, *serveArgs)
	}
	return addr
}

func cpuCell(v float64) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", v)
}

// produce sends *rate records a second, round-robin over the partitions, until stopped; each
// value starts with its send time (Unix nanoseconds).
func produce(addr, topic string) (stop func(), produced *atomic.Int64, err error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerLinger(0), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return nil, nil, err
	}
	produced = &atomic.Int64{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(*rate))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			v := make([]byte, *size)
			binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
			cl.Produce(context.Background(), &kgo.Record{Topic: topic, Partition: int32(i % *partitions), Value: v}, func(_ *kgo.Record, err error) {
				if err == nil {
					produced.Add(1)
				}
			})
		}
	}()
	return func() {
		close(done)
		wg.Wait()
		cl.Close()
	}, produced, nil
}

// fetchHook counts the consumer's Fetch requests and the bytes written and read for them.
type fetchHook struct {
	requests, written, read atomic.Int64
}

func (h *fetchHook) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, n int, _, _ time.Duration, err error) {
	if key == 1 && err == nil {
		h.requests.Add(1)
		h.written.Add(int64(n))
	}
}

func (h *fetchHook) OnBrokerRead(_ kgo.BrokerMetadata, key int16, n int, _, _ time.Duration, err error) {
	if key == 1 && err == nil {
		h.read.Add(int64(n))
	}
}

type result struct {
	sessions             bool
	fetchesPerSec        float64
	reqBytes, respBytes  float64
	brokerCPU, clientCPU float64 // percent of one core; brokerCPU -1 when not measured
	p50, p99, max        float64 // milliseconds
	records              int
}

// measure runs one consumer of every partition from their ends, with or without fetch sessions.
func measure(addr, topic string, pid int, sessions bool) (result, error) {
	hook := &fetchHook{}
	offsets := map[int32]kgo.Offset{}
	for p := 0; p < *partitions; p++ {
		offsets[int32(p)] = kgo.NewOffset().AtEnd()
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchMaxWait(*maxWait),
		kgo.WithHooks(hook),
	}
	if !sessions {
		opts = append(opts, kgo.DisableFetchSessions())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return result{}, err
	}
	defer cl.Close()
	var mu sync.Mutex
	var lat []float64
	measuring := atomic.Bool{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			now := time.Now().UnixNano()
			if !measuring.Load() {
				continue
			}
			mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				if len(r.Value) >= 8 {
					lat = append(lat, float64(now-int64(binary.BigEndian.Uint64(r.Value)))/1e6)
				}
			})
			mu.Unlock()
		}
	}()
	time.Sleep(*warmup)
	reqs0, w0, r0 := hook.requests.Load(), hook.written.Load(), hook.read.Load()
	b0, c0 := cpuSeconds(pid), cpuSeconds(os.Getpid())
	start := time.Now()
	measuring.Store(true)
	time.Sleep(*duration)
	measuring.Store(false)
	elapsed := time.Since(start).Seconds()
	reqs, w, r := hook.requests.Load()-reqs0, hook.written.Load()-w0, hook.read.Load()-r0
	b1, c1 := cpuSeconds(pid), cpuSeconds(os.Getpid())
	cancel()
	wg.Wait()
	res := result{sessions: sessions, fetchesPerSec: float64(reqs) / elapsed, brokerCPU: -1, clientCPU: 100 * (c1 - c0) / elapsed}
	if reqs > 0 {
		res.reqBytes, res.respBytes = float64(w)/float64(reqs), float64(r)/float64(reqs)
	}
	if pid > 0 {
		res.brokerCPU = 100 * (b1 - b0) / elapsed
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	res.records = len(lat)
	if len(lat) > 0 {
		q := func(f float64) float64 { return lat[min(len(lat)-1, int(f*float64(len(lat))))] }
		res.p50, res.p99, res.max = q(0.5), q(0.99), lat[len(lat)-1]
	}
	return res, nil
}

var clockTicks = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if t, perr := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && perr == nil && t > 0 {
		return t
	}
	return 100
}()

// cpuSeconds is the user and system CPU time of process pid so far (0 if unknown).
func cpuSeconds(pid int) float64 {
	if pid <= 0 {
		return 0
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name (which may hold spaces) close with ')': state is field 3,
	// utime and stime are fields 14 and 15.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / clockTicks
}

// spate is a broker this program started.
type spate struct {
	addr string
	dir  string
	cmd  *exec.Cmd
}

func startSpate(bin string, args []string) (*spate, error) {
	dir, err := os.MkdirTemp("", "spate-fetch-sessions-")
	if err != nil {
		return nil, err
	}
	port, admin := freePort(), freePort()
	b := &spate{addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir}
	all := append([]string{"serve", "--listen", b.addr, "--admin-listen", fmt.Sprintf("127.0.0.1:%d", admin),
		"--data-dir", filepath.Join(dir, "data")}, args...)
	log, err := os.Create(filepath.Join(dir, "broker.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	b.cmd = exec.Command(bin, all...)
	b.cmd.Stdout, b.cmd.Stderr = log, log
	// SIGKILL if this program dies first (main locks its thread: the signal follows the thread).
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if data, _ := os.ReadFile(log.Name()); strings.Contains(string(data), "spate ready") {
			return b, nil
		}
	}
	b.stop()
	return nil, fmt.Errorf("%s did not start within 30 s", bin)
}

// stop sends SIGTERM, waits for the broker, and removes its directory.
func (b *spate) stop() {
	_ = b.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = b.cmd.Process.Kill()
		<-done
	}
	os.RemoveAll(b.dir)
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
