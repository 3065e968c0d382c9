package spatego

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestProduceConsumeRoundTrip proves that keyed records with headers and explicit timestamps,
// written to a 4-partition topic by franz-go's default producer (idempotent, acks=all) with
// ProduceSync and with Produce and a promise, and by a non-idempotent acks=1 producer the same
// two ways, are acknowledged at consecutive offsets in each partition in the order produced, and
// are read back from the start by a direct consumer in per-partition order with their keys
// (including a null key), values (including a null value), headers (repeated keys, empty value)
// and timestamps intact, the idempotent producer's batches carrying its producer id and the
// acks=1 producer's none.
func TestProduceConsumeRoundTrip(t *testing.T) {
	tt := begin(t)
	const topic = "roundtrip"
	const partitions = 4
	adm := newAdmin(tt, "roundtrip-admin")
	createTopic(tt, adm, topic, partitions, nil)

	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	n := 0
	mk := func(tag string) *kgo.Record {
		i := n
		n++
		r := &kgo.Record{
			Topic: topic,
			Key:   fmt.Appendf(nil, "key-%d", i%13),
			Value: fmt.Appendf(nil, "%s value %d", tag, i),
			Headers: []kgo.RecordHeader{
				{Key: "tag", Value: []byte(tag)},
				{Key: "seq", Value: fmt.Appendf(nil, "%d", i)},
				{Key: "seq", Value: []byte("repeated header key")},
				{Key: "empty", Value: []byte{}},
			},
			// Not monotonic: the broker must keep each record's own CreateTime.
			Timestamp: base.Add(time.Duration((i*7919)%1000) * time.Millisecond),
		}
		switch i {
		case 5:
			r.Key = nil // a null key
		case 6:
			r.Value = nil // a null value
		}
		return r
	}

	// Produced records by producer, in the order handed to the client.
	produced := map[string][]*kgo.Record{}

	idem := newClient(tt, "roundtrip-idempotent") // franz-go's defaults: idempotent, acks=all
	leader := newClient(tt, "roundtrip-acks1", kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())

	for _, p := range []struct {
		name string
		cl   *Client
	}{{"idempotent-acks-all", idem}, {"acks-1", leader}} {
		// Sync.
		var batch []*kgo.Record
		for range 40 {
			batch = append(batch, mk(p.name+" sync"))
		}
		produceSync(tt, p.cl, batch...)
		produced[p.name] = append(produced[p.name], batch...)

		// Async, with a promise per record.
		var mu sync.Mutex
		var errs []string
		var wg sync.WaitGroup
		ctx := ctxFor(tt, opTimeout)
		for range 40 {
			r := mk(p.name + " async")
			produced[p.name] = append(produced[p.name], r)
			wg.Add(1)
			p.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
				defer wg.Done()
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%s: %v", r.Value, err))
					mu.Unlock()
				}
			})
		}
		if err := p.cl.Flush(ctx); err != nil {
			tt.Fatalf("%s: Flush: %v", p.name, err)
		}
		wg.Wait()
		if len(errs) > 0 {
			tt.Fatalf("%s: %d async records failed, first: %s", p.name, len(errs), errs[0])
		}
	}

	// The acknowledged offsets: per partition, consecutive from 0, in produce order per producer
	// (the producers ran one after the other).
	want := map[int32][]*kgo.Record{}
	for _, name := range []string{"idempotent-acks-all", "acks-1"} {
		for _, r := range produced[name] {
			want[r.Partition] = append(want[r.Partition], r)
		}
	}
	total := 0
	for p := int32(0); p < partitions; p++ {
		rs := want[p]
		if len(rs) == 0 {
			tt.Errorf("no record went to partition %d (keys are spread by murmur2; 13 keys over 4 partitions)", p)
		}
		for i, r := range rs {
			if r.Offset != int64(i) {
				tt.Fatalf("partition %d: the %d-th record produced there (%q) was acknowledged at offset %d, want %d",
					p, i, r.Value, r.Offset, i)
			}
		}
		total += len(rs)
	}
	idemPID := produced["idempotent-acks-all"][0].ProducerID
	if idemPID < 0 {
		tt.Errorf("the idempotent producer's records were acknowledged with producer id %d", idemPID)
	}

	// Read everything back from the start with a direct (group-less) consumer.
	consumer := newClient(tt, "roundtrip-consumer", kgo.ConsumeTopics(topic), kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
	got := consumeN(tt, consumer, total)
	if extra := pollFor(tt, consumer, 500*time.Millisecond); len(extra) > 0 {
		tt.Errorf("consumed %d records more than the %d produced, first at %d[%d]", len(extra), total, extra[0].Partition, extra[0].Offset)
	}
	next := map[int32]int{}
	for _, g := range got {
		i := next[g.Partition]
		next[g.Partition]++
		if i >= len(want[g.Partition]) {
			tt.Fatalf("partition %d: read a record at offset %d beyond the %d produced there", g.Partition, g.Offset, len(want[g.Partition]))
		}
		w := want[g.Partition][i]
		if d := diffRecord(w, g); d != "" {
			tt.Errorf("partition %d, %d-th record read: %s", g.Partition, i, d)
		}
		if g.Attrs.TimestampType() != 0 {
			tt.Errorf("%d[%d]: timestamp type %d, want 0 (CreateTime)", g.Partition, g.Offset, g.Attrs.TimestampType())
		}
		if w.ProducerID >= 0 && g.ProducerID != w.ProducerID {
			tt.Errorf("%d[%d]: producer id %d, want the idempotent producer's %d", g.Partition, g.Offset, g.ProducerID, w.ProducerID)
		}
		if w.ProducerID < 0 && g.ProducerID != -1 {
			tt.Errorf("%d[%d]: producer id %d in a batch of the non-idempotent producer, want -1", g.Partition, g.Offset, g.ProducerID)
		}
	}
	var counts []string
	for p := int32(0); p < partitions; p++ {
		counts = append(counts, fmt.Sprintf("%d:%d", p, len(want[p])))
	}
	sort.Strings(counts)
	tt.Logf("round trip of %d records, per partition %v", total, counts)
}

// TestCompressionCodecs proves that batches compressed with each codec franz-go offers (gzip,
// snappy, lz4, zstd, and none) are stored and served unchanged: every record comes back intact
// and in order, from a batch still marked with the codec it was produced with.
func TestCompressionCodecs(t *testing.T) {
	codecs := []struct {
		name  string
		codec kgo.CompressionCodec
		attr  uint8 // the batch attributes' compression bits
	}{
		{"none", kgo.NoCompression(), 0},
		{"gzip", kgo.GzipCompression(), 1},
		{"snappy", kgo.SnappyCompression(), 2},
		{"lz4", kgo.Lz4Compression(), 3},
		{"zstd", kgo.ZstdCompression(), 4},
	}
	for _, c := range codecs {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			tt := begin(t)
			topic := "codec-" + c.name
			adm := newAdmin(tt, topic+"-admin")
			createTopic(tt, adm, topic, 2, nil)
			// A manual partitioner, so that the records go to the partitions set below.
			prod := newClient(tt, topic+"-producer", kgo.ProducerBatchCompression(c.codec),
				kgo.ProducerLinger(50*time.Millisecond), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			ts := time.Now().Truncate(time.Millisecond)
			var rs []*kgo.Record
			for i := range 500 {
				rs = append(rs, &kgo.Record{
					Topic:     topic,
					Partition: int32(i % 2),
					Key:       fmt.Appendf(nil, "k%d", i),
					// Compressible: the codec must actually shrink the batch.
					Value:     fmt.Appendf(nil, "%s record %04d: the quick brown fox jumps over the lazy dog, again and again and again", c.name, i),
					Headers:   []kgo.RecordHeader{{Key: "codec", Value: []byte(c.name)}},
					Timestamp: ts.Add(time.Duration(i) * time.Millisecond),
				})
			}
			produceSync(tt, prod, rs...)

			want := map[int32][]*kgo.Record{}
			for _, r := range rs {
				want[r.Partition] = append(want[r.Partition], r)
			}
			cons := newClient(tt, topic+"-consumer", kgo.ConsumeTopics(topic), kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
			got := consumeN(tt, cons, len(rs))
			next := map[int32]int{}
			bad := 0
			for _, g := range got {
				i := next[g.Partition]
				next[g.Partition]++
				if i >= len(want[g.Partition]) {
					tt.Fatalf("partition %d: read a record at offset %d beyond the %d produced", g.Partition, g.Offset, len(want[g.Partition]))
				}
				if d := diffRecord(want[g.Partition][i], g); d != "" {
					bad++
					if bad <= 5 {
						tt.Errorf("partition %d, %d-th record: %s", g.Partition, i, d)
					}
				}
				if g.Attrs.CompressionType() != c.attr {
					bad++
					if bad <= 5 {
						tt.Errorf("%d[%d]: batch compression %d, want %d (%s)", g.Partition, g.Offset, g.Attrs.CompressionType(), c.attr, c.name)
					}
				}
			}
			if bad > 0 {
				tt.Errorf("%d problems in %d records", bad, len(got))
			}
		})
	}
}

// TestAutoTopicCreation proves that the broker's auto.create.topics.enable follows the Metadata
// request's allow_auto_topic_creation flag: franz-go's default producer (the flag false) gets
// UNKNOWN_TOPIC_OR_PARTITION for a missing topic and the topic is not created, while a producer
// with AllowAutoTopicCreation creates it (one partition, num.partitions) and its record is read
// back.
func TestAutoTopicCreation(t *testing.T) {
	tt := begin(t)
	adm := newAdmin(tt, "autocreate-admin")

	plain := newClient(tt, "autocreate-off", kgo.UnknownTopicRetries(2))
	res := plain.ProduceSync(ctxFor(tt, opTimeout), &kgo.Record{Topic: "autocreate-not-asked", Value: []byte("x")})
	if err := res.FirstErr(); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		tt.Errorf("producing to a missing topic without allow_auto_topic_creation: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
	listed, err := adm.ListTopics(ctxFor(tt, opTimeout))
	if err != nil {
		tt.Fatalf("Metadata: %v", err)
	}
	if listed.Has("autocreate-not-asked") {
		tt.Errorf("the topic was created although no request allowed it")
	}

	asking := newClient(tt, "autocreate-on", kgo.AllowAutoTopicCreation())
	r := &kgo.Record{Topic: "autocreate-asked", Key: []byte("k"), Value: []byte("auto"), Timestamp: time.Now().Truncate(time.Millisecond)}
	produceSync(tt, asking, r)
	listed, err = adm.ListTopics(ctxFor(tt, opTimeout), "autocreate-asked")
	if err != nil {
		tt.Fatalf("Metadata: %v", err)
	}
	if td := listed["autocreate-asked"]; td.Err != nil || len(td.Partitions) != 1 {
		tt.Errorf("the auto-created topic: err %v, %d partitions; want 1 (num.partitions)", td.Err, len(td.Partitions))
	}
	cons := newClient(tt, "autocreate-consumer", kgo.ConsumeTopics("autocreate-asked"), kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
	if d := diffRecord(r, consumeN(tt, cons, 1)[0]); d != "" {
		tt.Errorf("the record read back: %s", d)
	}
}
