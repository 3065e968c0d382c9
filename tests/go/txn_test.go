package spatego

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// txnRows is what a test expects in each partition of a topic, in order: record values.
type txnRows map[int32][]string

func (r txnRows) add(p int32, v string) { r[p] = append(r[p], v) }

// equal compares every value of every partition (an empty partition equals a missing one).
func (r txnRows) equal(o txnRows) bool {
	for p := range r {
		if !slices.Equal(r[p], o[p]) {
			return false
		}
	}
	for p := range o {
		if !slices.Equal(r[p], o[p]) {
			return false
		}
	}
	return true
}

// diff names the first difference from want: partition, index, both values.
func (r txnRows) diff(want txnRows) string {
	var ps []int32
	for p := range r {
		ps = append(ps, p)
	}
	for p := range want {
		if _, ok := r[p]; !ok {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	for _, p := range ps {
		g, w := r[p], want[p]
		for i := 0; i < len(g) || i < len(w); i++ {
			switch {
			case i >= len(g):
				return fmt.Sprintf("partition %d: %d values, want %d (first missing %q)", p, len(g), len(w), w[i])
			case i >= len(w):
				return fmt.Sprintf("partition %d: %d values, want %d (first extra %q)", p, len(g), len(w), g[i])
			case g[i] != w[i]:
				return fmt.Sprintf("partition %d value %d: %q, want %q", p, i, g[i], w[i])
			}
		}
	}
	return "no difference"
}

// String abbreviates partitions of more than 8 values, for failure messages only.
func (r txnRows) String() string {
	var ps []int32
	for p, vs := range r {
		if len(vs) > 0 {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	var b strings.Builder
	for _, p := range ps {
		vs := r[p]
		if len(vs) > 8 {
			vs = append(vs[:4:4], "...", vs[len(vs)-2], vs[len(vs)-1])
		}
		fmt.Fprintf(&b, "[%d: %s] ", p, strings.Join(vs, " "))
	}
	return strings.TrimSpace(b.String())
}

// readToSentinel reads partitions 0..parts-1 of topic from the start at the given isolation
// level until each has delivered a record whose value is sentinel (the tests write it last, in a
// committed transaction or as a plain record, so every record before it has been delivered by
// then; nothing may follow it). Returns the values before the sentinels.
func readToSentinel(tt *T, name, topic string, parts int32, level kgo.IsolationLevel, sentinel string) txnRows {
	tt.Helper()
	offsets := map[int32]kgo.Offset{}
	for p := int32(0); p < parts; p++ {
		offsets[p] = kgo.NewOffset().AtStart()
	}
	cl := newClient(tt, name, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}), kgo.FetchIsolationLevel(level))
	defer cl.Close()
	got := txnRows{}
	done := partitionSet{}
	ctx := ctxFor(tt, phaseTimeout)
	for len(done) < int(parts) {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			tt.Fatalf("%s: partitions %v of %d reached their sentinel within %v; read %s", name, done, parts, phaseTimeout, got)
		}
		for _, fe := range fs.Errors() {
			tt.Fatalf("%s: fetch error on %s[%d]: %v", name, fe.Topic, fe.Partition, fe.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			switch {
			case done[r.Partition]:
				tt.Errorf("%s: %s[%d]@%d %q after the sentinel", name, r.Topic, r.Partition, r.Offset, r.Value)
			case string(r.Value) == sentinel:
				done[r.Partition] = true
			default:
				got.add(r.Partition, string(r.Value))
			}
		})
	}
	return got
}

// endOffsets is kadm's ListEndOffsets (read_uncommitted: the high watermarks) or
// ListCommittedOffsets (read_committed: the last stable offsets) of topic, by partition.
func endOffsets(tt *T, adm *kadm.Client, topic string, committed bool) map[int32]int64 {
	tt.Helper()
	list, what := adm.ListEndOffsets, "ListEndOffsets"
	if committed {
		list, what = adm.ListCommittedOffsets, "ListCommittedOffsets"
	}
	listed, err := list(ctxFor(tt, opTimeout), topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		tt.Fatalf("%s %s: %v", what, topic, err)
	}
	out := map[int32]int64{}
	listed.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// endTxn ends cl's transaction, failing the test on an error.
func endTxn(tt *T, cl *Client, end kgo.TransactionEndTry, what string) {
	tt.Helper()
	if err := cl.EndTransaction(ctxFor(tt, opTimeout), end); err != nil {
		tt.Fatalf("%s: EndTransaction(%s) of %s: %v", cl.name, endWord(end), what, err)
	}
}

func endWord(end kgo.TransactionEndTry) string {
	if end == kgo.TryCommit {
		return "commit"
	}
	return "abort"
}

func beginTxn(tt *T, cl *Client) {
	tt.Helper()
	if err := cl.BeginTransaction(); err != nil {
		tt.Fatalf("%s: BeginTransaction: %v", cl.name, err)
	}
}

// isFenced says whether err is how a broker tells a producer that a newer one with its
// transactional id took over.
func isFenced(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch)
}

// TestTransactions proves Kafka transactions (transaction version 1) through franz-go's
// transactional client:
//   - transaction-state-topic: FindCoordinator with key type 1 (transaction) for a transactional
//     id names node 0 (once the first one created __transaction_state); the topic has 50
//     partitions and is internal as in Kafka: Metadata marks it so (kadm leaves it out of a
//     listing of all topics) and DeleteRecords on it is INVALID_TOPIC_EXCEPTION, as for
//     __consumer_offsets.
//   - commit-abort: one transactional producer (kgo.TransactionalID) runs six transactions over
//     3 partitions, each writing 1-3 records to two or three of them with ProduceSync (so an
//     aborted one's records are in the log), ended with kgo.TryCommit or kgo.TryAbort, with plain
//     records written between two of them. ListEndOffsets is every partition's records plus one
//     marker per transaction that touched it, ListCommittedOffsets (read_committed) the same.
//     With a transaction left open on partitions 0 and 1, ListCommittedOffsets there is the open
//     transaction's first offset (the last stable offset) while ListEndOffsets moves on with
//     plain records after it. Once it commits, a consumer with
//     kgo.FetchIsolationLevel(kgo.ReadCommitted()) reads exactly the committed and plain records,
//     in order per partition, and a read-uncommitted one every record.
//   - fencing: a second client with the same transactional id fences the first (its
//     InitProducerId bumps the epoch and aborts the first's open transaction): the first's
//     EndTransaction(TryCommit) fails with PRODUCER_FENCED (or INVALID_PRODUCER_EPOCH); so does
//     its next transaction's produce (franz-go first asks InitProducerId again with its old
//     producer id and epoch, which must be refused, else it would fence the second in turn); its
//     open transaction never becomes visible to read_committed, while the second's commits do.
//     Once the second's transaction is complete, a raw InitProducerId with the first's producer
//     id and epoch (KIP-360) is refused (PRODUCER_FENCED), and the second commits again.
//   - group-transact-session: consume-transform-produce with kgo.GroupTransactSession (read
//     committed input, 3 partitions of 20 records, at most 25 records a transaction, output to the
//     same partition of another topic, offsets committed in the transaction with
//     TxnOffsetCommit). The first transaction is ended with TryAbort (its output is in the log):
//     the session rewinds to the group's committed offsets and reads those records again. The
//     output read committed holds every input record exactly once in input order; read
//     uncommitted it is the aborted transaction's records followed by the same; the group's
//     committed offsets (OffsetFetch with require_stable) are the input's end offsets.
func TestTransactions(t *testing.T) {
	t.Run("transaction-state-topic", func(t *testing.T) {
		tt := begin(t)
		const id, topic = "spate-go-txn-find-coordinator", "__transaction_state"
		cl := newClient(tt, "txn-state-raw")
		adm := kadm.NewClient(cl.Client)
		if err := cl.Ping(ctxFor(tt, opTimeout)); err != nil {
			tt.Fatalf("ping: %v", err)
		}
		// The first FindCoordinator for a transactional id creates the topic; until then the
		// answer may be COORDINATOR_NOT_AVAILABLE, which clients retry.
		eventually(tt, phaseTimeout, "FindCoordinator (key type 1) for a transactional id to name node 0", func() string {
			fc := kmsg.NewPtrFindCoordinatorRequest()
			fc.CoordinatorType = 1
			fc.CoordinatorKey = id
			fc.CoordinatorKeys = []string{id}
			resp, err := cl.Broker(0).Request(ctxFor(tt, opTimeout), fc)
			if err != nil {
				return err.Error()
			}
			r := resp.(*kmsg.FindCoordinatorResponse)
			code, node := r.ErrorCode, r.NodeID
			if len(r.Coordinators) > 0 {
				code, node = r.Coordinators[0].ErrorCode, r.Coordinators[0].NodeID
			}
			if code != 0 || node != 0 {
				return fmt.Sprintf("FindCoordinator v%d: node %d, error %v", r.Version, node, kerr.ErrorForCode(code))
			}
			return ""
		})
		td, err := adm.ListTopics(ctxFor(tt, opTimeout), topic)
		d := td[topic]
		if err == nil {
			err = d.Err
		}
		if err != nil {
			tt.Fatalf("Metadata %s: %v", topic, err)
		}
		if len(d.Partitions) != 50 {
			tt.Errorf("%s has %d partitions, want 50 (Kafka's transaction.state.log.num.partitions)", topic, len(d.Partitions))
		}
		if !d.IsInternal {
			tt.Errorf("Metadata says %s is not internal; Kafka marks it internal, as __consumer_offsets", topic)
		}
		all, err := adm.ListTopics(ctxFor(tt, opTimeout))
		if err != nil {
			tt.Fatalf("Metadata of all topics: %v", err)
		}
		if all.Has(topic) {
			tt.Errorf("kadm filters internal topics from a listing of all topics, yet %s is there", topic)
		}
		// DeleteRecords on it is refused as on __consumer_offsets (Kafka: "Cannot delete records
		// of internal topic"). Before offset 0: nothing would go even if it were taken.
		req := kmsg.NewPtrDeleteRecordsRequest()
		req.TimeoutMillis = 5000
		rt := kmsg.NewDeleteRecordsRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewDeleteRecordsRequestTopicPartition()
		rp.Partition = 0
		rp.Offset = 0
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		kr, err := cl.Broker(0).Request(ctxFor(tt, opTimeout), req)
		if err != nil {
			tt.Fatalf("DeleteRecords %s: %v", topic, err)
		}
		resp := kr.(*kmsg.DeleteRecordsResponse)
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			tt.Fatalf("DeleteRecords %s: answer %+v", topic, resp)
		}
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.InvalidTopicException.Code {
			tt.Errorf("DeleteRecords on %s[0]: %v, want INVALID_TOPIC_EXCEPTION as for __consumer_offsets", topic, kerr.ErrorForCode(code))
		}
	})

	t.Run("commit-abort", func(t *testing.T) {
		tt := begin(t)
		adm := newAdmin(tt, "txn-ca-admin")
		const topic = "txn-commit-abort"
		const parts = 3
		createTopic(tt, adm, topic, parts, nil)
		txn := newClient(tt, "txn-ca", kgo.TransactionalID("spate-go-txn-commit-abort"),
			kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		plain := newClient(tt, "txn-ca-plain", kgo.DefaultProduceTopic(topic),
			kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DisableIdempotentWrite())

		visible, written := txnRows{}, txnRows{}
		markers := map[int32]int64{}
		plan := []kgo.TransactionEndTry{kgo.TryCommit, kgo.TryAbort, kgo.TryAbort, kgo.TryCommit, kgo.TryAbort, kgo.TryCommit}
		for i, end := range plan {
			beginTxn(tt, txn)
			var rs []*kgo.Record
			touched := map[int32]bool{}
			for p := int32(0); p < parts; p++ {
				if (int32(i)+p)%4 == 3 {
					continue
				}
				touched[p] = true
				for j := 0; j < 1+(i+int(p))%3; j++ {
					rs = append(rs, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "t%d-%s-p%d-%d", i, endWord(end), p, j)})
				}
			}
			produceSync(tt, txn, rs...)
			endTxn(tt, txn, end, fmt.Sprintf("transaction %d", i))
			for _, r := range rs {
				written.add(r.Partition, string(r.Value))
				if end == kgo.TryCommit {
					visible.add(r.Partition, string(r.Value))
				}
			}
			for p := range touched {
				markers[p]++
			}
			if i == 1 || i == 4 {
				var prs []*kgo.Record
				for p := int32(0); p < parts; p++ {
					v := fmt.Sprintf("plain-after-%d-p%d", i, p)
					prs = append(prs, &kgo.Record{Partition: p, Value: []byte(v)})
					written.add(p, v)
					visible.add(p, v)
				}
				produceSync(tt, plain, prs...)
			}
		}

		hwm := map[int32]int64{}
		for p := int32(0); p < parts; p++ {
			hwm[p] = int64(len(written[p])) + markers[p]
		}
		if got := endOffsets(tt, adm, topic, false); fmt.Sprint(got) != fmt.Sprint(hwm) {
			tt.Errorf("ListEndOffsets %v, want records + one marker per transaction: %v", got, hwm)
		}
		if got := endOffsets(tt, adm, topic, true); fmt.Sprint(got) != fmt.Sprint(hwm) {
			tt.Errorf("ListCommittedOffsets %v with no transaction open, want the high watermarks %v", got, hwm)
		}

		// A transaction left open on partitions 0 and 1, plain records after it on all three.
		beginTxn(tt, txn)
		open := []*kgo.Record{{Partition: 0, Value: []byte("open-p0")}, {Partition: 1, Value: []byte("open-p1")}}
		produceSync(tt, txn, open...)
		for _, r := range open {
			if r.Offset != hwm[r.Partition] {
				tt.Errorf("the open transaction's record on %d at offset %d, want the end %d", r.Partition, r.Offset, hwm[r.Partition])
			}
		}
		var late []*kgo.Record
		for p := int32(0); p < parts; p++ {
			late = append(late, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "late-p%d", p)})
		}
		produceSync(tt, plain, late...)
		wantEnd := map[int32]int64{0: hwm[0] + 2, 1: hwm[1] + 2, 2: hwm[2] + 1}
		wantLSO := map[int32]int64{0: hwm[0], 1: hwm[1], 2: hwm[2] + 1}
		if got := endOffsets(tt, adm, topic, false); fmt.Sprint(got) != fmt.Sprint(wantEnd) {
			tt.Errorf("with a transaction open: ListEndOffsets %v, want %v", got, wantEnd)
		}
		if got := endOffsets(tt, adm, topic, true); fmt.Sprint(got) != fmt.Sprint(wantLSO) {
			tt.Errorf("with a transaction open: ListCommittedOffsets %v, want the last stable offsets %v (the open transaction's first offset on 0 and 1)", got, wantLSO)
		}
		endTxn(tt, txn, kgo.TryCommit, "the open transaction")
		for _, r := range append(open, late...) {
			written.add(r.Partition, string(r.Value))
			visible.add(r.Partition, string(r.Value))
		}
		got := endOffsets(tt, adm, topic, true)
		for p := int32(0); p < parts; p++ {
			want := wantEnd[p]
			if p < 2 {
				want++ // the commit marker
			}
			if got[p] != want {
				tt.Errorf("after the commit: ListCommittedOffsets[%d] = %d, want %d", p, got[p], want)
			}
		}

		// The sentinel, in a committed transaction of its own.
		beginTxn(tt, txn)
		var ends []*kgo.Record
		for p := int32(0); p < parts; p++ {
			ends = append(ends, &kgo.Record{Partition: p, Value: []byte("end")})
		}
		produceSync(tt, txn, ends...)
		endTxn(tt, txn, kgo.TryCommit, "the sentinel transaction")

		if got := readToSentinel(tt, "txn-ca-read-committed", topic, parts, kgo.ReadCommitted(), "end"); !got.equal(visible) {
			tt.Errorf("read committed: %s\n got %s\nwant %s", got.diff(visible), got, visible)
		}
		if got := readToSentinel(tt, "txn-ca-read-uncommitted", topic, parts, kgo.ReadUncommitted(), "end"); !got.equal(written) {
			tt.Errorf("read uncommitted: %s\n got %s\nwant %s", got.diff(written), got, written)
		}
	})

	t.Run("fencing", func(t *testing.T) {
		tt := begin(t)
		adm := newAdmin(tt, "txn-fence-admin")
		const topic = "txn-fencing"
		const parts = 3
		const id = "spate-go-txn-fencing"
		createTopic(tt, adm, topic, parts, nil)
		opts := []kgo.Opt{kgo.TransactionalID(id), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner())}
		visible, written := txnRows{}, txnRows{}
		records := func(label string, n int) []*kgo.Record {
			var rs []*kgo.Record
			for p := int32(0); p < parts; p++ {
				for j := 0; j < n; j++ {
					rs = append(rs, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "%s-p%d-%d", label, p, j)})
				}
			}
			return rs
		}
		note := func(rs []*kgo.Record, committed bool) {
			for _, r := range rs {
				written.add(r.Partition, string(r.Value))
				if committed {
					visible.add(r.Partition, string(r.Value))
				}
			}
		}

		first := newClient(tt, "txn-fence-first", opts...)
		beginTxn(tt, first)
		rs := records("first-committed", 2)
		produceSync(tt, first, rs...)
		endTxn(tt, first, kgo.TryCommit, "the first's committed transaction")
		note(rs, true)
		firstID, firstEpoch, err := first.ProducerID(ctxFor(tt, opTimeout))
		if err != nil {
			tt.Fatalf("the first client's producer id: %v", err)
		}
		beginTxn(tt, first)
		rs = records("first-open", 3)
		produceSync(tt, first, rs...)
		note(rs, false)

		// The second client's first produce makes it initialize its producer id (InitProducerId
		// with the same transactional id), which fences the first and aborts its transaction.
		second := newClient(tt, "txn-fence-second", opts...)
		beginTxn(tt, second)
		rs = records("second", 2)
		produceSync(tt, second, rs...)
		secondRecords := rs

		err = first.EndTransaction(ctxFor(tt, opTimeout), kgo.TryCommit)
		if !isFenced(err) {
			tt.Errorf("the fenced client's EndTransaction(TryCommit): %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", err)
		} else {
			tt.Logf("the fenced client's commit: %v", err)
		}
		// After a failed end franz-go stays in the transaction with its outcome unconfirmed, and
		// ends it only with an abort (which sends nothing: the producer id has failed). Its next
		// transaction must fail, fenced: franz-go keeps a producer id that met PRODUCER_FENCED
		// failed for good (BeginTransaction says so); after INVALID_PRODUCER_EPOCH it would first
		// ask InitProducerId with its old id and epoch (KIP-360), which the coordinator must
		// refuse, or the first would fence the second in turn.
		if err := first.EndTransaction(ctxFor(tt, opTimeout), kgo.TryAbort); err != nil {
			tt.Logf("the fenced client's abort: %v", err)
		}
		next := "BeginTransaction"
		err = first.BeginTransaction()
		if err == nil {
			next = "produce"
			ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			err = first.ProduceSync(ctx, &kgo.Record{Partition: 0, Value: []byte("first-after-fence")}).FirstErr()
			cancel()
		}
		switch {
		case err == nil:
			tt.Errorf("the fenced client produced again in a new transaction")
		case errors.Is(err, context.DeadlineExceeded):
			tt.Errorf("the fenced client's produce got no answer within %v, only its own deadline", opTimeout)
		case !isFenced(err):
			tt.Errorf("the fenced client's next %s: %v, want PRODUCER_FENCED or INVALID_PRODUCER_EPOCH", next, err)
		default:
			tt.Logf("the fenced client's next %s: %v", next, err)
		}
		_ = first.EndTransaction(ctxFor(tt, opTimeout), kgo.TryAbort)

		endTxn(tt, second, kgo.TryCommit, "the second's transaction")
		note(secondRecords, true)
		// InitProducerId with the first's id and epoch (KIP-360, as a client recovering its
		// producer id sends it), now that the id's last transaction is complete, must be refused:
		// a newer epoch exists. Taking it would bump the epoch and fence the second, whose next
		// commit would then fail. (While a transaction is ongoing, Kafka's coordinator checks
		// only the producer id and aborts the transaction first, so this is asked after it.)
		ip := kmsg.NewPtrInitProducerIDRequest()
		ip.TransactionalID = kmsg.StringPtr(id)
		ip.TransactionTimeoutMillis = 60000
		ip.ProducerID, ip.ProducerEpoch = firstID, firstEpoch
		// CONCURRENT_TRANSACTIONS (the commit's markers still being written) is retried, as
		// clients do.
		eventually(tt, phaseTimeout, "InitProducerId with the fenced producer's id and epoch to be answered PRODUCER_FENCED", func() string {
			resp, err := first.Broker(0).Request(ctxFor(tt, opTimeout), ip)
			if err != nil {
				return err.Error()
			}
			r := resp.(*kmsg.InitProducerIDResponse)
			if err := kerr.ErrorForCode(r.ErrorCode); !isFenced(err) {
				msg := fmt.Sprintf("InitProducerId v%d with id %d and epoch %d: error %v, id %d, epoch %d", r.Version, firstID, firstEpoch, err, r.ProducerID, r.ProducerEpoch)
				if !errors.Is(err, kerr.ConcurrentTransactions) {
					tt.Fatalf("%s; want PRODUCER_FENCED", msg)
				}
				return msg
			}
			return ""
		})

		beginTxn(tt, second)
		var ends []*kgo.Record
		for p := int32(0); p < parts; p++ {
			ends = append(ends, &kgo.Record{Partition: p, Value: []byte("end")})
		}
		produceSync(tt, second, ends...)
		endTxn(tt, second, kgo.TryCommit, "the sentinel transaction")

		if got := readToSentinel(tt, "txn-fence-read-committed", topic, parts, kgo.ReadCommitted(), "end"); !got.equal(visible) {
			tt.Errorf("read committed (nothing of the fenced transaction): %s\n got %s\nwant %s", got.diff(visible), got, visible)
		}
		if got := readToSentinel(tt, "txn-fence-read-uncommitted", topic, parts, kgo.ReadUncommitted(), "end"); !got.equal(written) {
			tt.Errorf("read uncommitted (the fenced transaction's flushed records, nothing produced after the fence): %s\n got %s\nwant %s", got.diff(written), got, written)
		}
		lso, hwm := endOffsets(tt, adm, topic, true), endOffsets(tt, adm, topic, false)
		if fmt.Sprint(lso) != fmt.Sprint(hwm) {
			tt.Errorf("ListCommittedOffsets %v != ListEndOffsets %v: a transaction is still open", lso, hwm)
		}
	})

	t.Run("group-transact-session", func(t *testing.T) {
		tt := begin(t)
		adm := newAdmin(tt, "txn-eos-admin")
		const in, out, group = "txn-eos-in", "txn-eos-out", "txn-eos-group"
		const parts, per = 3, 20
		createTopic(tt, adm, in, parts, nil)
		createTopic(tt, adm, out, parts, nil)
		feeder := newClient(tt, "txn-eos-feeder", kgo.DefaultProduceTopic(in), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		var inputs []*kgo.Record
		for p := int32(0); p < parts; p++ {
			for j := 0; j < per; j++ {
				inputs = append(inputs, &kgo.Record{Partition: p, Value: fmt.Appendf(nil, "in-p%d-%d", p, j)})
			}
		}
		produceSync(tt, feeder, inputs...)

		rc := &requestCounter{}
		sess, err := kgo.NewGroupTransactSession(append(baseOpts(tt, "txn-eos", rc),
			kgo.TransactionalID("spate-go-txn-eos"),
			kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(in),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.RequireStableFetchOffsets(),
			kgo.HeartbeatInterval(500*time.Millisecond),
			kgo.SessionTimeout(10*time.Second),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
		)...)
		if err != nil {
			tt.Fatalf("NewGroupTransactSession: %v", err)
		}
		scl := &Client{Client: sess.Client(), name: "txn-eos", t: tt, requests: rc}
		tt.Cleanup(func() {
			done := make(chan struct{})
			go func() { sess.Close(); close(done) }()
			select {
			case <-done:
			case <-time.After(closeTimeout):
				tt.Errorf("closing the transact session took over %v", closeTimeout)
			}
		})

		committedOnce := map[string]int{}
		var aborted txnRows
		transactions := 0
		ctx := ctxFor(tt, phaseTimeout+20*time.Second)
		for len(committedOnce) < parts*per {
			fs := sess.PollRecords(ctx, 25)
			if ctx.Err() != nil {
				tt.Fatalf("processed %d of %d input records within %v", len(committedOnce), parts*per, phaseTimeout+20*time.Second)
			}
			for _, fe := range fs.Errors() {
				tt.Fatalf("transact session: fetch error on %s[%d]: %v", fe.Topic, fe.Partition, fe.Err)
			}
			recs := fs.Records()
			if len(recs) == 0 {
				continue
			}
			if err := sess.Begin(); err != nil {
				tt.Fatalf("transact session Begin: %v", err)
			}
			var outs []*kgo.Record
			for _, r := range recs {
				outs = append(outs, &kgo.Record{Topic: out, Partition: r.Partition, Value: append([]byte("out-"), r.Value...)})
			}
			produceSync(tt, scl, outs...)
			transactions++
			end := kgo.TryCommit
			if aborted == nil {
				end = kgo.TryAbort
			}
			endCtx, cancel := context.WithTimeout(context.Background(), opTimeout)
			committed, err := sess.End(endCtx, end)
			cancel()
			if err != nil {
				tt.Fatalf("transact session End(%s) of transaction %d: %v", endWord(end), transactions, err)
			}
			switch {
			case end == kgo.TryAbort:
				if committed {
					tt.Fatalf("transact session End(TryAbort) says it committed")
				}
				aborted = txnRows{}
				for _, r := range outs {
					aborted.add(r.Partition, string(r.Value))
				}
			case committed:
				for _, r := range recs {
					committedOnce[string(r.Value)]++
				}
			default:
				tt.Logf("transaction %d of %d records was aborted by the session (a rebalance?); its records come again", transactions, len(recs))
			}
		}
		for v, n := range committedOnce {
			if n != 1 {
				tt.Errorf("input %s was in %d committed transactions", v, n)
			}
		}
		// Spate finalizes transaction.version 2 (KIP-890 part 2), which franz-go 1.22 speaks:
		// the brokers add the partitions and the group's offsets, the client sends neither
		// AddPartitionsToTxn nor AddOffsetsToTxn.
		if rc.count(kmsg.TxnOffsetCommit) == 0 || rc.count(kmsg.AddOffsetsToTxn) != 0 || rc.count(kmsg.AddPartitionsToTxn) != 0 ||
			rc.count(kmsg.OffsetCommit) != 0 {
			tt.Errorf("the session's requests: %s; want TxnOffsetCommit, no AddOffsetsToTxn, AddPartitionsToTxn or OffsetCommit", rc)
		}

		// The output, read to a plain sentinel written after every transaction ended.
		sentinel := newClient(tt, "txn-eos-sentinel", kgo.DefaultProduceTopic(out), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		var ends []*kgo.Record
		for p := int32(0); p < parts; p++ {
			ends = append(ends, &kgo.Record{Partition: p, Value: []byte("end")})
		}
		produceSync(tt, sentinel, ends...)
		want := txnRows{}
		for _, r := range inputs {
			want.add(r.Partition, "out-"+string(r.Value))
		}
		if got := readToSentinel(tt, "txn-eos-read-committed", out, parts, kgo.ReadCommitted(), "end"); !got.equal(want) {
			tt.Errorf("output read committed (each input once, in order): %s\n got %s\nwant %s", got.diff(want), got, want)
		}
		wantAll := txnRows{}
		for p := int32(0); p < parts; p++ {
			wantAll[p] = append(append([]string{}, aborted[p]...), want[p]...)
		}
		if got := readToSentinel(tt, "txn-eos-read-uncommitted", out, parts, kgo.ReadUncommitted(), "end"); !got.equal(wantAll) {
			tt.Errorf("output read uncommitted (the aborted transaction's, then each input once): %s\n got %s\nwant %s", got.diff(wantAll), got, wantAll)
		}

		fetched, err := adm.FetchOffsets(kadm.RequireStable(ctxFor(tt, opTimeout)), group)
		if err == nil {
			err = fetched.Error()
		}
		if err != nil {
			tt.Fatalf("OffsetFetch %s: %v", group, err)
		}
		ends2 := endOffsets(tt, adm, in, false)
		got := map[int32]int64{}
		fetched.Each(func(o kadm.OffsetResponse) {
			if o.Topic == in {
				got[o.Partition] = o.At
			}
		})
		if fmt.Sprint(got) != fmt.Sprint(ends2) {
			tt.Errorf("the group's committed offsets %v, want the input's end offsets %v", got, ends2)
		}
		tt.Logf("%d transactions, the first aborted (%s)", transactions, aborted)
	})
}
