package spatego

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// produceFlushed produces rs with a producer that lingers (so that they wait in its buffer),
// then flushes: the records go out together, in as few batches as ProducerBatchMaxBytes allows.
// Any record's error, or the flush taking over opTimeout, fails the test.
func produceFlushed(t *T, cl *Client, rs []*kgo.Record) {
	t.Helper()
	ctx := ctxFor(t, opTimeout)
	var wg sync.WaitGroup
	errs := make([]error, len(rs))
	for i, r := range rs {
		wg.Add(1)
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			errs[i] = err
			wg.Done()
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("%s: flushing %d records: %v", cl.name, len(rs), err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: record %d of %d (%s[%d]): %v", cl.name, i, len(rs), rs[i].Topic, rs[i].Partition, err)
		}
	}
}

// TestTopicCompressionType proves a topic's compression.type with franz-go: for each codec a
// topic can name (uncompressed, gzip, snappy, lz4, zstd), a one-partition topic with it is fed by
// five producers, one per franz-go codec (none, gzip, snappy, lz4, zstd: the topic's own among
// them), each producing one record alone and then 120 (about 100 KB, so several snappy and lz4
// blocks once recompressed) flushed together; a consumer reads every record back in order, byte
// for byte (keys, values, nulls, headers, timestamps), each from a batch marked with the topic's
// codec, whatever codec it was produced with.
func TestTopicCompressionType(t *testing.T) {
	topicCodecs := []struct {
		name string
		attr uint8 // the batch attributes' compression bits
	}{
		{"uncompressed", 0},
		{"gzip", 1},
		{"snappy", 2},
		{"lz4", 3},
		{"zstd", 4},
	}
	clientCodecs := []struct {
		name  string
		codec kgo.CompressionCodec
	}{
		{"none", kgo.NoCompression()},
		{"gzip", kgo.GzipCompression()},
		{"snappy", kgo.SnappyCompression()},
		{"lz4", kgo.Lz4Compression()},
		{"zstd", kgo.ZstdCompression()},
	}
	for n, tc := range topicCodecs {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tt := begin(t)
			topic := "compression-type-" + tc.name
			adm := newAdmin(tt, topic+"-admin")
			createTopic(tt, adm, topic, 1, map[string]*string{"compression.type": kadm.StringPtr(tc.name)})
			rnd := rand.New(rand.NewPCG(uint64(n), 61))
			ts := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
			var sent []*kgo.Record
			for _, cc := range clientCodecs {
				var rs []*kgo.Record
				for i := range 121 {
					r := &kgo.Record{Topic: topic, Partition: 0, Timestamp: ts.Add(time.Duration(len(sent)+i) * time.Millisecond)}
					if i%7 != 0 || i%29 == 5 {
						r.Key = fmt.Appendf(nil, "%s-%d", cc.name, i)
					}
					switch {
					case i%29 == 5: // a null value
					case i%5 == 2:
						r.Value = make([]byte, 1+rnd.IntN(1500))
						for j := range r.Value {
							r.Value[j] = byte(rnd.UintN(256))
						}
					default:
						for range 1 + i%50 {
							r.Value = fmt.Appendf(r.Value, "%s record %d for a %s topic; ", cc.name, i, tc.name)
						}
					}
					if i%3 != 0 {
						r.Headers = []kgo.RecordHeader{{Key: "codec", Value: []byte(cc.name)}, {Key: "i", Value: fmt.Appendf(nil, "%d", i)}}
					}
					rs = append(rs, r)
				}
				prod := newClient(tt, topic+"-"+cc.name, kgo.ProducerBatchCompression(cc.codec),
					kgo.ProducerLinger(5*time.Second), kgo.RecordPartitioner(kgo.ManualPartitioner()))
				produceFlushed(tt, prod, rs[:1])
				produceFlushed(tt, prod, rs[1:])
				prod.Close()
				for i, r := range rs {
					if want := int64(len(sent) + i); r.Offset != want {
						tt.Fatalf("%s producer: record %d acknowledged at offset %d, want %d", cc.name, i, r.Offset, want)
					}
				}
				sent = append(sent, rs...)
			}

			cons := newClient(tt, topic+"-consumer", kgo.ConsumeTopics(topic), kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
			got := consumeN(tt, cons, len(sent))
			if len(got) != len(sent) {
				tt.Fatalf("read %d records, want %d", len(got), len(sent))
			}
			bad := 0
			for i, g := range got {
				producedWith := clientCodecs[i/121].name
				if d := diffRecord(sent[i], g); d != "" {
					bad++
					if bad <= 5 {
						tt.Errorf("record %d (from the %s producer): %s", i, producedWith, d)
					}
				}
				if c := g.Attrs.CompressionType(); c != tc.attr {
					bad++
					if bad <= 5 {
						tt.Errorf("offset %d (from the %s producer): batch compression %d, want %d (%s)", g.Offset, producedWith, c, tc.attr, tc.name)
					}
				}
			}
			if bad > 0 {
				tt.Errorf("%d problems in %d records", bad, len(got))
			}
			if extra := pollFor(tt, cons, 300*time.Millisecond); len(extra) > 0 {
				tt.Errorf("%d records beyond the %d produced", len(extra), len(sent))
			}
		})
	}
}
