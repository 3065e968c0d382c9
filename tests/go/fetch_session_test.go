package spatego

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const sessionPartitions = 120

// fetchCounts is what /metrics says of fetches: by kind, and the session errors answered.
type fetchCounts struct {
	sessionless, full, incremental, sessionErrors float64
}

func readFetchCounts(t *T, b *Broker) fetchCounts {
	t.Helper()
	m, err := b.Metrics()
	if err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	kind := func(k string) float64 { return metricSum(m, "spate_fetch_requests_total", `kind="`+k+`"`) }
	errs := 0.0
	for _, code := range []string{"FETCH_SESSION_ID_NOT_FOUND", "INVALID_FETCH_SESSION_EPOCH", "FETCH_SESSION_TOPIC_ID_ERROR"} {
		errs += metricSum(m, "spate_errors_total", `code="`+code+`"`)
	}
	return fetchCounts{kind("sessionless"), kind("full"), kind("incremental"), errs}
}

func (a fetchCounts) minus(b fetchCounts) fetchCounts {
	return fetchCounts{a.sessionless - b.sessionless, a.full - b.full, a.incremental - b.incremental, a.sessionErrors - b.sessionErrors}
}

// TestFetchSessions: franz-go uses incremental fetch sessions (KIP-227) by default. A group
// member reads a 120-partition topic in four rounds of one record per partition: every record
// arrives exactly once, and the broker counts mostly incremental fetches and no session error.
// With kgo.DisableFetchSessions() the same reads are all sessionless fetches.
func TestFetchSessions(t *testing.T) {
	for _, sessions := range []bool{true, false} {
		name := map[bool]string{true: "sessions", false: "disabled"}[sessions]
		t.Run(name, func(t *testing.T) {
			tt := begin(t)
			topic := "fetch-sessions-" + name
			createTopic(tt, newAdmin(tt, topic+"-admin"), topic, sessionPartitions, nil)
			prod := newClient(tt, topic+"-producer", kgo.RecordPartitioner(kgo.ManualPartitioner()))
			before := readFetchCounts(tt, broker)
			opts := []kgo.Opt{
				kgo.ConsumerGroup(topic),
				kgo.ConsumeTopics(topic),
				kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()),
				kgo.FetchMaxWait(100 * time.Millisecond),
			}
			if !sessions {
				opts = append(opts, kgo.DisableFetchSessions())
			}
			cons := newClient(tt, topic+"-consumer", opts...)
			seen := map[string]int{}
			for round := range 4 {
				var rs []*kgo.Record
				for p := range int32(sessionPartitions) {
					rs = append(rs, &kgo.Record{Topic: topic, Partition: p, Value: fmt.Appendf(nil, "r%d-p%d", round, p)})
				}
				produceSync(tt, prod, rs...)
				for _, r := range consumeN(tt, cons, sessionPartitions) {
					if want := fmt.Sprintf("r%d-p%d", round, r.Partition); string(r.Value) != want {
						t.Fatalf("round %d: partition %d gave %q, want %q", round, r.Partition, r.Value, want)
					}
					seen[string(r.Value)]++
				}
			}
			if extra := pollFor(tt, cons, 300*time.Millisecond); len(extra) > 0 {
				t.Fatalf("%d records more than produced, first %q", len(extra), extra[0].Value)
			}
			for v, n := range seen {
				if n != 1 {
					t.Fatalf("%s arrived %d times", v, n)
				}
			}
			d := readFetchCounts(tt, broker).minus(before)
			t.Logf("fetches during the test: %+v", d)
			if d.sessionErrors != 0 {
				t.Fatalf("%v session errors answered", d.sessionErrors)
			}
			if sessions && !(d.full > 0 && d.incremental > 3*d.full) {
				t.Fatalf("franz-go's fetches were not served from a session: %+v", d)
			}
			if !sessions && (d.full != 0 || d.incremental != 0 || d.sessionless == 0) {
				t.Fatalf("fetches with sessions disabled were not sessionless: %+v", d)
			}
		})
	}
}

// TestFetchSessionEvicted: on a broker of one core with one session slot, evictable at once, a
// hand-made full fetch takes the slot from a franz-go consumer's session. franz-go then meets
// FETCH_SESSION_ID_NOT_FOUND, resets its session (its log says so), opens a new one with a full
// fetch, and misses no record.
func TestFetchSessionEvicted(t *testing.T) {
	b, err := StartBroker(spateBin(), "--cores", "1",
		"--max-incremental-fetch-session-cache-slots", "1", "--min-incremental-fetch-session-eviction-ms", "0")
	if err != nil {
		t.Fatal(err)
	}
	tt := &T{T: t, clientLog: newRingLog(400)}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("franz-go log:\n%s", tt.clientLog.String(120))
		}
		b.CleanUp(t.Failed())
	})
	seed := kgo.SeedBrokers(b.Addr)
	topic := "evicted"
	created, err := kadm.NewClient(newClient(tt, "evict-admin", seed).Client).CreateTopic(ctxFor(tt, opTimeout), 2, 1, nil, topic)
	if err != nil || created.Err != nil {
		t.Fatalf("CreateTopic: %v %v", err, created.Err)
	}
	prod := newClient(tt, "evict-producer", seed, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce := func(round int) {
		produceSync(tt, prod, &kgo.Record{Topic: topic, Partition: 0, Value: fmt.Appendf(nil, "r%d-0", round)},
			&kgo.Record{Topic: topic, Partition: 1, Value: fmt.Appendf(nil, "r%d-1", round)})
	}
	start := map[int32]kgo.Offset{0: kgo.NewOffset().AtStart(), 1: kgo.NewOffset().AtStart()}
	cons := newClient(tt, "evict-consumer", seed, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchMaxWait(200*time.Millisecond))
	produce(0)
	consumeN(tt, cons, 2)
	eventually(tt, 10*time.Second, "the consumer's fetches served from its session", func() string {
		if c := readFetchCounts(tt, b); c.incremental == 0 {
			return fmt.Sprintf("%+v", c)
		}
		return ""
	})

	// A full fetch (session id 0, epoch 0) of our own: it can only get a session by evicting the
	// consumer's, unused since its last fetch began (retried should that be this very millisecond).
	raw := newClient(tt, "evict-raw", seed)
	taken := false
	for try := 0; try < 20 && !taken; try++ {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxBytes = 1 << 20
		req.SessionID, req.SessionEpoch = 0, 0
		part := kmsg.NewFetchRequestTopicPartition()
		part.Partition, part.PartitionMaxBytes, part.LogStartOffset = 0, 1<<20, -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID, rt.Partitions = topic, created.ID, []kmsg.FetchRequestTopicPartition{part}
		req.Topics = []kmsg.FetchRequestTopic{rt}
		resp, err := req.RequestWith(ctxFor(tt, opTimeout), raw.Broker(0))
		if err != nil {
			t.Fatalf("full fetch: %v", err)
		}
		taken = resp.ErrorCode == 0 && resp.SessionID > 0
		time.Sleep(5 * time.Millisecond)
	}
	if !taken {
		t.Fatalf("the full fetch never got the session slot")
	}

	// The consumer's next fetch finds its session gone; it starts anew and reads on.
	produce(1)
	for _, r := range consumeN(tt, cons, 2) {
		if want := fmt.Sprintf("r1-%d", r.Partition); string(r.Value) != want {
			t.Fatalf("after the eviction partition %d gave %q, want %q", r.Partition, r.Value, want)
		}
	}
	eventually(tt, 10*time.Second, "franz-go resetting its session on FETCH_SESSION_ID_NOT_FOUND", func() string {
		if log := tt.clientLog.String(400); !strings.Contains(log, "SessionIDNotFound from our in use session") {
			return "not in franz-go's log yet"
		}
		return ""
	})
	m, err := b.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if n := metricSum(m, "spate_errors_total", `code="FETCH_SESSION_ID_NOT_FOUND"`); n < 1 {
		t.Fatalf("no FETCH_SESSION_ID_NOT_FOUND answered")
	}
	if n := metricSum(m, "spate_fetch_session_evictions_total"); n < 1 {
		t.Fatalf("no eviction counted")
	}
}
