package spatego

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Every wait on the broker is bounded by one of these.
const (
	opTimeout    = 20 * time.Second // one request, produce or admin call
	phaseTimeout = 40 * time.Second // consuming a known set of records, a rebalance
	closeTimeout = 20 * time.Second // closing a client (leaving its group, flushing)
)

// debug says whether SPATE_GO_DEBUG=1 asked for franz-go's debug log on stderr.
var debug = os.Getenv("SPATE_GO_DEBUG") == "1"

// clientLogger keeps franz-go's log lines in the test's ring buffer (printed if the test fails),
// and with SPATE_GO_DEBUG=1 also prints them, at debug level, to stderr.
type clientLogger struct {
	name string
	ring *ringLog
}

func (l *clientLogger) Level() kgo.LogLevel {
	if debug {
		return kgo.LogLevelDebug
	}
	return kgo.LogLevelInfo
}

func (l *clientLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s [%s] %s", time.Now().Format("15:04:05.000"), l.name, level, msg)
	for i := 0; i+1 < len(keyvals); i += 2 {
		fmt.Fprintf(&b, "; %v: %v", keyvals[i], keyvals[i+1])
	}
	l.ring.add(b.String())
	if debug {
		fmt.Fprintln(os.Stderr, b.String())
	}
}

// requestCounter is a franz-go hook counting the requests a client wrote, by API key, so a test
// can tell which protocol a client really spoke.
type requestCounter struct {
	mu     sync.Mutex
	counts map[int16]int
}

func (c *requestCounter) OnBrokerWrite(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[int16]int{}
	}
	c.counts[key]++
}

func (c *requestCounter) count(key kmsg.Key) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[int16(key)]
}

func (c *requestCounter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]int, 0, len(c.counts))
	for k := range c.counts {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", kmsg.NameForKey(int16(k)), c.counts[int16(k)]))
	}
	return strings.Join(parts, " ")
}

// Client is a franz-go client made by newClient: closed (bounded) when its test ends, logging
// into the test's buffer, counting the requests it writes.
type Client struct {
	*kgo.Client
	name     string
	t        *T
	requests *requestCounter
	once     sync.Once
}

// baseOpts are the options every test client starts with: the shared broker, name as the client
// id, franz-go's log into the test's buffer, rc counting the requests written.
func baseOpts(t *T, name string, rc *requestCounter) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(broker.Addr),
		kgo.ClientID(name),
		kgo.WithLogger(&clientLogger{name: name, ring: t.clientLog}),
		kgo.WithHooks(rc),
		kgo.MetadataMinAge(250 * time.Millisecond),
		kgo.RetryTimeout(opTimeout),
	}
}

// newClient makes a franz-go client for the shared broker. Options after the defaults win.
func newClient(t *T, name string, opts ...kgo.Opt) *Client {
	t.Helper()
	rc := &requestCounter{}
	cl, err := kgo.NewClient(append(baseOpts(t, name, rc), opts...)...)
	if err != nil {
		t.Fatalf("kgo.NewClient(%s): %v", name, err)
	}
	c := &Client{Client: cl, name: name, t: t, requests: rc}
	t.Cleanup(c.Close)
	return c
}

// Close closes the client, failing the test if that takes more than closeTimeout (a hang leaving
// the group, say). Closing twice is harmless.
func (c *Client) Close() {
	c.once.Do(func() {
		done := make(chan struct{})
		go func() {
			c.Client.Close()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(closeTimeout):
			c.t.Errorf("closing client %s took over %v (it hung leaving its group or flushing)", c.name, closeTimeout)
		}
	})
}

// newAdmin makes a kadm client over a fresh franz-go client.
func newAdmin(t *T, name string) *kadm.Client {
	t.Helper()
	return kadm.NewClient(newClient(t, name).Client)
}

func ctxFor(t *T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// createTopic creates a topic with replication factor 1, failing the test on any error.
func createTopic(t *T, adm *kadm.Client, topic string, partitions int32, configs map[string]*string) {
	t.Helper()
	resp, err := adm.CreateTopic(ctxFor(t, opTimeout), partitions, 1, configs, topic)
	if err != nil {
		t.Fatalf("CreateTopics %s (%d partitions, configs %v): %v (%s)", topic, partitions, fmtConfigs(configs), err, resp.ErrMessage)
	}
}

func fmtConfigs(configs map[string]*string) string {
	var parts []string
	for k, v := range configs {
		if v == nil {
			parts = append(parts, k+"=null")
		} else {
			parts = append(parts, k+"="+*v)
		}
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ", ") + "}"
}

// produceSync produces rs with ProduceSync and fails the test on any record's error, or if the
// call takes over opTimeout. (franz-go's RecordDeliveryTimeout counts from each record's
// timestamp, so it cannot bound records stamped in the past; and an idempotent producer does
// not give up a record sent once when its context ends. Hence the watchdog.)
func produceSync(t *T, cl *Client, rs ...*kgo.Record) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	done := make(chan kgo.ProduceResults, 1)
	go func() { done <- cl.ProduceSync(ctx, rs...) }()
	var results kgo.ProduceResults
	select {
	case results = <-done:
	case <-time.After(opTimeout + 5*time.Second):
		t.Fatalf("%s: ProduceSync of %d records (first to %s) did not return within %v", cl.name, len(rs), rs[0].Topic, opTimeout+5*time.Second)
	}
	for i, r := range results {
		if r.Err != nil {
			t.Fatalf("%s: ProduceSync record %d of %d (topic %s partition %d): %v", cl.name, i, len(results), r.Record.Topic, r.Record.Partition, r.Err)
		}
	}
}

// consumeN polls cl until it has n records, failing the test on a fetch error or after
// phaseTimeout. It returns the records in the order polled.
func consumeN(t *T, cl *Client, n int) []*kgo.Record {
	t.Helper()
	ctx := ctxFor(t, phaseTimeout)
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("%s: consumed %d records of %d within %v", cl.name, len(out), n, phaseTimeout)
		}
		for _, fe := range fs.Errors() {
			t.Fatalf("%s: fetch error on %s[%d]: %v", cl.name, fe.Topic, fe.Partition, fe.Err)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

// pollFor polls cl for up to d and returns what came; fetch errors fail the test, the poll's own
// deadline does not.
func pollFor(t *T, cl *Client, d time.Duration) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	fs := cl.PollFetches(ctx)
	for _, fe := range fs.Errors() {
		if errors.Is(fe.Err, context.DeadlineExceeded) || errors.Is(fe.Err, context.Canceled) {
			continue
		}
		t.Fatalf("%s: fetch error on %s[%d]: %v", cl.name, fe.Topic, fe.Partition, fe.Err)
	}
	return fs.Records()
}

// diffRecord describes how got differs from want in what a round trip must keep (topic,
// partition, offset, key, value, headers, timestamp); "" if it does not.
func diffRecord(want, got *kgo.Record) string {
	var d []string
	if got.Topic != want.Topic || got.Partition != want.Partition || got.Offset != want.Offset {
		d = append(d, fmt.Sprintf("position %s[%d]@%d, want %s[%d]@%d", got.Topic, got.Partition, got.Offset, want.Topic, want.Partition, want.Offset))
	}
	if (got.Key == nil) != (want.Key == nil) || !bytes.Equal(got.Key, want.Key) {
		d = append(d, fmt.Sprintf("key %s, want %s", showBytes(got.Key), showBytes(want.Key)))
	}
	if (got.Value == nil) != (want.Value == nil) || !bytes.Equal(got.Value, want.Value) {
		d = append(d, fmt.Sprintf("value %s, want %s", showBytes(got.Value), showBytes(want.Value)))
	}
	if fmtHeaders(got.Headers) != fmtHeaders(want.Headers) {
		d = append(d, fmt.Sprintf("headers %s, want %s", fmtHeaders(got.Headers), fmtHeaders(want.Headers)))
	}
	if got.Timestamp.UnixMilli() != want.Timestamp.UnixMilli() {
		d = append(d, fmt.Sprintf("timestamp %d, want %d", got.Timestamp.UnixMilli(), want.Timestamp.UnixMilli()))
	}
	return strings.Join(d, "; ")
}

func showBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", b[:40], len(b))
	}
	return fmt.Sprintf("%q", b)
}

func fmtHeaders(hs []kgo.RecordHeader) string {
	var parts []string
	for _, h := range hs {
		parts = append(parts, h.Key+"="+showBytes(h.Value))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// partitionSet is a set of partition numbers, printed sorted.
type partitionSet map[int32]bool

func (s partitionSet) sorted() []int32 {
	out := make([]int32, 0, len(s))
	for p, ok := range s {
		if ok {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func (s partitionSet) String() string { return fmt.Sprint(s.sorted()) }

// eventually retries check every 100 ms until it returns "" or timeout passes, then fails the
// test with what check said last.
func eventually(t *T, timeout time.Duration, what string, check func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msg := check()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %s", what, timeout, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var _ testing.TB = (*T)(nil)
