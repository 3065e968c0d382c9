package spatego

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Spate's default message_max_bytes (Kafka's message.max.bytes): the largest record batch, counted
// as Kafka counts it (the whole batch, its 12-byte offset and length prefix included).
const brokerMessageMaxBytes = 1048588

// varintLen is the length of v as a zigzag varint, as record fields are encoded.
func varintLen(v int64) int {
	u := uint64((v << 1) ^ (v >> 63))
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

// batchSize is the size of a v2 record batch holding one uncompressed record with this key and
// value, no headers, and timestamp and offset deltas 0: the 61-byte batch header and the record.
func batchSize(keyLen, valueLen int) int {
	body := 1 + 1 + 1 + varintLen(int64(keyLen)) + keyLen + varintLen(int64(valueLen)) + valueLen + 1
	return 61 + varintLen(int64(body)) + body
}

// valueLenForBatch is the value length that makes batchSize(keyLen, value) exactly size.
func valueLenForBatch(keyLen, size int) int {
	v := size - 61 - keyLen - 10
	for batchSize(keyLen, v) > size {
		v--
	}
	for batchSize(keyLen, v+1) <= size {
		v++
	}
	if batchSize(keyLen, v) != size {
		panic(fmt.Sprintf("no value length makes a %d-byte batch", size))
	}
	return v
}

// TestMessageSizeLimit proves that the largest batch a topic accepts is exactly its
// max.message.bytes (the broker's message_max_bytes, 1048588, by default; or the topic's own
// setting): a one-record batch of exactly that size is acknowledged and read back intact (from a
// fetch whose partition limit, 1 MiB, is smaller than the batch), one byte more and far more are
// refused with MESSAGE_TOO_LARGE and leave nothing in the log, and the same idempotent producer
// goes on producing at the next offset afterwards.
func TestMessageSizeLimit(t *testing.T) {
	for _, c := range []struct {
		name    string
		limit   int
		configs map[string]*string
	}{
		{"broker-default", brokerMessageMaxBytes, nil},
		{"topic-max.message.bytes", 10000, map[string]*string{"max.message.bytes": kadm.StringPtr("10000")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tt := begin(t)
			topic := "size-" + c.name
			adm := newAdmin(tt, topic+"-admin")
			createTopic(tt, adm, topic, 1, c.configs)
			// The client's own batch limit is well above the broker's, so the broker decides.
			prod := newClient(tt, topic+"-producer", kgo.ProducerBatchCompression(kgo.NoCompression()),
				kgo.ProducerBatchMaxBytes(8<<20), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			key := []byte("k")
			ts := time.Now().Truncate(time.Millisecond)

			atLimit := &kgo.Record{Topic: topic, Key: key, Value: bytes.Repeat([]byte{'a'}, valueLenForBatch(len(key), c.limit)), Timestamp: ts}
			produceSync(tt, prod, atLimit)
			if atLimit.Offset != 0 {
				tt.Fatalf("the %d-byte batch was acknowledged at offset %d, want 0", c.limit, atLimit.Offset)
			}

			for _, size := range []int{c.limit + 1, 2*c.limit + 100} {
				over := &kgo.Record{Topic: topic, Key: key, Value: bytes.Repeat([]byte{'b'}, valueLenForBatch(len(key), size)), Timestamp: ts}
				res := prod.ProduceSync(ctxFor(tt, opTimeout), over)
				err := res[0].Err
				switch {
				case err == nil:
					tt.Errorf("a %d-byte batch (limit %d) was acknowledged at offset %d; want MESSAGE_TOO_LARGE", size, c.limit, over.Offset)
				case !errors.Is(err, kerr.MessageTooLarge):
					tt.Errorf("a %d-byte batch (limit %d) failed with %v; want MESSAGE_TOO_LARGE", size, c.limit, err)
				default:
					// franz-go adds compressed_bytes only to the broker's MESSAGE_TOO_LARGE.
					tt.Logf("a %d-byte batch (limit %d): %v", size, c.limit, err)
				}
			}

			after := &kgo.Record{Topic: topic, Key: key, Value: []byte("small, after the refused ones"), Timestamp: ts}
			produceSync(tt, prod, after)
			if after.Offset != 1 {
				tt.Errorf("the record after the refused batches was acknowledged at offset %d, want 1 (nothing of them may be stored)", after.Offset)
			}

			cons := newClient(tt, topic+"-consumer", kgo.ConsumeTopics(topic), kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
			got := consumeN(tt, cons, 2)
			if d := diffRecord(atLimit, got[0]); d != "" {
				tt.Errorf("the %d-byte record read back: %s", c.limit, d)
			}
			if d := diffRecord(after, got[1]); d != "" {
				tt.Errorf("the record after the refused ones read back: %s", d)
			}
			if len(got) > 2 {
				tt.Errorf("read %d records, want 2; the third at offset %d has %d bytes", len(got), got[2].Offset, len(got[2].Value))
			}
		})
	}
}
