package spatego

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
)

// topicSettings is every topic setting Spate knows (README's topic settings table), each with a
// value other than its broker default.
var topicSettings = map[string]string{
	"cleanup.policy":         "compact",
	"delete.retention.ms":    "3600000",
	"flush.messages":         "1000",
	"flush.ms":               "2000",
	"index.interval.bytes":   "8192",
	"max.message.bytes":      "2000000",
	"message.timestamp.type": "LogAppendTime",
	"retention.bytes":        "104857600",
	"retention.ms":           "60000",
	"segment.bytes":          "1048576",
	"segment.ms":             "600000",
}

// setting is one topic config as DescribeConfigs reports it.
type setting struct {
	value  string
	source kmsg.ConfigSource
}

func (s setting) String() string { return s.value + " (" + s.source.String() + ")" }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// describeTopic is DescribeConfigs of one topic through kadm, failing the test on any error.
func describeTopic(tt *T, adm *kadm.Client, topic string) map[string]setting {
	tt.Helper()
	rcs, err := adm.DescribeTopicConfigs(ctxFor(tt, opTimeout), topic)
	if err != nil {
		tt.Fatalf("DescribeConfigs %s: %v", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil || rc.Err != nil {
		tt.Fatalf("DescribeConfigs %s: %v %v (%s)", topic, err, rc.Err, rc.ErrMessage)
	}
	got := map[string]setting{}
	for _, c := range rc.Configs {
		got[c.Key] = setting{c.MaybeValue(), c.Source}
	}
	return got
}

// expectSettings compares a topic's described configs with want, key by key.
func expectSettings(tt *T, adm *kadm.Client, topic, after string, want map[string]setting) {
	tt.Helper()
	got := describeTopic(tt, adm, topic)
	var diffs []string
	for _, k := range sortedKeys(want) {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s missing, want %v", k, want[k]))
		} else if g != want[k] {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", k, g, want[k]))
		}
	}
	for _, k := range sortedKeys(got) {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s = %v is not a topic setting", k, got[k]))
		}
	}
	if len(diffs) > 0 {
		tt.Errorf("DescribeConfigs %s after %s:\n  %s", topic, after, strings.Join(diffs, "\n  "))
	}
}

// pinnedAdmin is a kadm client whose requests of key go at most at version v.
func pinnedAdmin(tt *T, name string, key kmsg.Key, v int16) (*kadm.Client, *Client) {
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(int16(key), v)
	cl := newClient(tt, name, kgo.MaxVersions(vs))
	return kadm.NewClient(cl.Client), cl
}

// alterOK runs an alter through kadm and fails the test unless every resource succeeded.
func alterOK(tt *T, what string, rs kadm.AlterConfigsResponses, err error) {
	tt.Helper()
	if err != nil {
		tt.Fatalf("%s: %v", what, err)
	}
	if len(rs) == 0 {
		tt.Fatalf("%s: no resource answered", what)
	}
	for _, r := range rs {
		if r.Err != nil {
			tt.Fatalf("%s: %s: %v (%s)", what, r.Name, r.Err, r.ErrMessage)
		}
	}
}

// alterRefused checks that the one resource of an alter was refused with want, its message
// containing mention.
func alterRefused(tt *T, what string, rs kadm.AlterConfigsResponses, err error, want *kerr.Error, mention string) {
	tt.Helper()
	if err != nil {
		tt.Errorf("%s: %v, want %s for the resource", what, err, want.Message)
		return
	}
	if len(rs) != 1 {
		tt.Errorf("%s: %d resources answered, want 1", what, len(rs))
		return
	}
	if !errors.Is(rs[0].Err, want) || !strings.Contains(rs[0].ErrMessage, mention) {
		tt.Errorf("%s: %v (%q), want %s with a message naming %q", what, rs[0].Err, rs[0].ErrMessage, want.Message, mention)
	}
}

// codeName is an error code's Kafka name (NONE for 0).
func codeName(code int16) string {
	if err := kerr.TypedErrorForCode(code); err != nil {
		return err.Message
	}
	return "NONE"
}

func set(k, v string) kadm.AlterConfig {
	return kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: kadm.StringPtr(v)}
}

// TestAlterTopicConfigs proves IncrementalAlterConfigs (key 44) and AlterConfigs (key 33) on
// topics through kadm, each change read back with DescribeConfigs:
//   - incremental-v0, incremental-v1 (kadm's AlterTopicConfigs, IncrementalAlterConfigs pinned to
//     that version): SET of each of the eleven topic settings in turn (the value as set,
//     DYNAMIC_TOPIC_CONFIG; the keys not set yet still DEFAULT_CONFIG with their defaults),
//     APPEND and SUBTRACT on cleanup.policy, DELETE of all eleven in one request (every key back
//     to its default), APPEND to a key that is not overridden (from its default);
//   - incremental-refusals: INVALID_CONFIG naming the key for a bad value, an unknown key, APPEND
//     to a key that is not a list, SUBTRACT emptying the list, and a good SET beside a bad one
//     (neither applied); a missing topic UNKNOWN_TOPIC_OR_PARTITION; AlterBrokerConfigs of broker
//     0 and of the cluster default INVALID_REQUEST with Spate's message; __consumer_offsets
//     INVALID_REQUEST; one raw request with several resources answers each on its own (a
//     resource named twice: INVALID_REQUEST for both); ValidateAlterTopicConfigs answers as the
//     change would and changes nothing; what Spate answers for a key named twice in one resource
//     (Kafka: INVALID_REQUEST) is logged, not checked;
//   - state-v0, state-v1, state-v2 (AlterTopicConfigsState, AlterConfigs pinned to that
//     version): the named configs replace all the topic's overrides, an empty set clears them;
//     the refusals as above; ValidateAlterTopicConfigsState changes nothing.
func TestAlterTopicConfigs(t *testing.T) {
	for v := int16(0); v <= 1; v++ {
		t.Run(fmt.Sprintf("incremental-v%d", v), func(t *testing.T) {
			tt := begin(t)
			adm, _ := pinnedAdmin(tt, fmt.Sprintf("alter-inc-v%d", v), kmsg.IncrementalAlterConfigs, v)
			topic := fmt.Sprintf("alter-inc-v%d", v)
			createTopic(tt, adm, topic, 1, nil)
			defaults := describeTopic(tt, adm, topic)
			want := map[string]setting{}
			for _, k := range sortedKeys(topicSettings) {
				d, ok := defaults[k]
				switch {
				case !ok:
					tt.Fatalf("DescribeConfigs of a new topic has no %s", k)
				case d.source != kmsg.ConfigSourceDefaultConfig || d.value == topicSettings[k]:
					tt.Fatalf("DescribeConfigs of a new topic: %s = %v; want a DEFAULT_CONFIG other than %q", k, d, topicSettings[k])
				}
				want[k] = d
			}
			if len(defaults) != len(topicSettings) {
				tt.Errorf("DescribeConfigs of a new topic lists %v, want exactly %v", sortedKeys(defaults), sortedKeys(topicSettings))
			}

			for _, k := range sortedKeys(topicSettings) {
				rs, err := adm.AlterTopicConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set(k, topicSettings[k])}, topic)
				alterOK(tt, "SET "+k, rs, err)
				want[k] = setting{topicSettings[k], kmsg.ConfigSourceDynamicTopicConfig}
				expectSettings(tt, adm, topic, "SET "+k, want)
			}

			for _, step := range []struct {
				op    kadm.IncrementalOp
				value string
				want  string
			}{
				{kadm.AppendConfig, "delete", "compact,delete"},
				{kadm.AppendConfig, "compact", "compact,delete"},
				{kadm.SubtractConfig, "compact", "delete"},
			} {
				what := fmt.Sprintf("op %d cleanup.policy %s", step.op, step.value)
				rs, err := adm.AlterTopicConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Op: step.op, Name: "cleanup.policy", Value: kadm.StringPtr(step.value)}}, topic)
				alterOK(tt, what, rs, err)
				want["cleanup.policy"] = setting{step.want, kmsg.ConfigSourceDynamicTopicConfig}
				expectSettings(tt, adm, topic, what, want)
			}

			var deletes []kadm.AlterConfig
			for _, k := range sortedKeys(topicSettings) {
				deletes = append(deletes, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
			}
			rs, err := adm.AlterTopicConfigs(ctxFor(tt, opTimeout), deletes, topic)
			alterOK(tt, "DELETE of every key", rs, err)
			expectSettings(tt, adm, topic, "DELETE of every key", defaults)

			rs, err = adm.AlterTopicConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: kadm.StringPtr("compact")}}, topic)
			alterOK(tt, "APPEND compact to the default cleanup.policy", rs, err)
			want = map[string]setting{}
			for k, d := range defaults {
				want[k] = d
			}
			want["cleanup.policy"] = setting{"delete,compact", kmsg.ConfigSourceDynamicTopicConfig}
			expectSettings(tt, adm, topic, "APPEND compact to the default cleanup.policy", want)
		})
	}

	t.Run("incremental-refusals", func(t *testing.T) {
		tt := begin(t)
		adm := newAdmin(tt, "alter-refusals")
		const topic, other = "alter-refusals", "alter-refusals-2"
		createTopic(tt, adm, topic, 1, map[string]*string{"retention.ms": kadm.StringPtr("3600000"), "cleanup.policy": kadm.StringPtr("compact")})
		createTopic(tt, adm, other, 1, nil)
		before := describeTopic(tt, adm, topic)

		for _, c := range []struct {
			what    string
			configs []kadm.AlterConfig
			mention string
		}{
			{"a bad value", []kadm.AlterConfig{set("retention.ms", "soon")}, "retention.ms"},
			{"an unknown key", []kadm.AlterConfig{set("no.such.key", "1")}, "no.such.key"},
			{"APPEND to a key that is not a list", []kadm.AlterConfig{{Op: kadm.AppendConfig, Name: "segment.bytes", Value: kadm.StringPtr("1")}}, "segment.bytes"},
			{"SUBTRACT emptying the list", []kadm.AlterConfig{{Op: kadm.SubtractConfig, Name: "cleanup.policy", Value: kadm.StringPtr("compact")}}, "cleanup.policy"},
			{"a good SET beside a bad one", []kadm.AlterConfig{set("retention.ms", "1000"), set("segment.ms", "0")}, "segment.ms"},
		} {
			rs, err := adm.AlterTopicConfigs(ctxFor(tt, opTimeout), c.configs, topic)
			alterRefused(tt, c.what, rs, err, kerr.InvalidConfig, c.mention)
			rs, err = adm.ValidateAlterTopicConfigs(ctxFor(tt, opTimeout), c.configs, topic)
			alterRefused(tt, c.what+" (validate-only)", rs, err, kerr.InvalidConfig, c.mention)
		}
		rs, err := adm.AlterTopicConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set("retention.ms", "1000")}, "alter-no-such-topic")
		alterRefused(tt, "a missing topic", rs, err, kerr.UnknownTopicOrPartition, "alter-no-such-topic")
		rs, err = adm.AlterTopicConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set("cleanup.policy", "delete")}, "__consumer_offsets")
		alterRefused(tt, "__consumer_offsets", rs, err, kerr.InvalidRequest, "__consumer_offsets")
		const brokerMsg = "changing broker configs at run time is not supported by Spate yet"
		rs, err = adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set("log.retention.ms", "1000")}, 0)
		alterRefused(tt, "broker 0", rs, err, kerr.InvalidRequest, brokerMsg)
		rs, err = adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set("log.retention.ms", "1000")})
		alterRefused(tt, "the cluster-wide broker default", rs, err, kerr.InvalidRequest, brokerMsg)
		expectSettings(tt, adm, topic, "the refusals", before)

		// validate-only of good changes: answered, nothing changed.
		rs, err = adm.ValidateAlterTopicConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{
			set("retention.ms", "60000"), {Op: kadm.AppendConfig, Name: "cleanup.policy", Value: kadm.StringPtr("delete")}, set("segment.bytes", "1048576"),
		}, topic)
		alterOK(tt, "validate-only SET and APPEND", rs, err)
		rs, err = adm.ValidateAlterTopicConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: "retention.ms"}}, topic)
		alterOK(tt, "validate-only DELETE", rs, err)
		expectSettings(tt, adm, topic, "validate-only changes", before)

		// One raw request, several resources: each answered on its own, in order.
		cl := newClient(tt, "alter-refusals-raw")
		req := kmsg.NewPtrIncrementalAlterConfigsRequest()
		type resource struct {
			kind kmsg.ConfigResourceType
			name string
			op   kmsg.IncrementalAlterConfigOp
			key  string
			val  string
			want *kerr.Error
		}
		resources := []resource{
			{kmsg.ConfigResourceTypeTopic, other, kmsg.IncrementalAlterConfigOpSet, "retention.ms", "120000", nil},
			{kmsg.ConfigResourceTypeTopic, topic, kmsg.IncrementalAlterConfigOpSet, "retention.ms", "soon", kerr.InvalidConfig},
			{kmsg.ConfigResourceTypeTopic, "alter-no-such-topic", kmsg.IncrementalAlterConfigOpSet, "retention.ms", "1", kerr.UnknownTopicOrPartition},
			{kmsg.ConfigResourceTypeBroker, "0", kmsg.IncrementalAlterConfigOpSet, "log.retention.ms", "1", kerr.InvalidRequest},
			{kmsg.ConfigResourceTypeTopic, "__consumer_offsets", kmsg.IncrementalAlterConfigOpSet, "cleanup.policy", "delete", kerr.InvalidRequest},
			{kmsg.ConfigResourceTypeTopic, "alter-twice", kmsg.IncrementalAlterConfigOpSet, "retention.ms", "1", kerr.InvalidRequest},
			{kmsg.ConfigResourceTypeTopic, "alter-twice", kmsg.IncrementalAlterConfigOpSet, "retention.ms", "2", kerr.InvalidRequest},
		}
		for _, r := range resources {
			rr := kmsg.NewIncrementalAlterConfigsRequestResource()
			rr.ResourceType, rr.ResourceName = r.kind, r.name
			rc := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
			rc.Name, rc.Op, rc.Value = r.key, r.op, kmsg.StringPtr(r.val)
			rr.Configs = append(rr.Configs, rc)
			req.Resources = append(req.Resources, rr)
		}
		kr, err := cl.Broker(0).Request(ctxFor(tt, opTimeout), req)
		if err != nil {
			tt.Fatalf("IncrementalAlterConfigs with %d resources: %v", len(resources), err)
		}
		resp := kr.(*kmsg.IncrementalAlterConfigsResponse)
		var got, want []string
		for _, r := range resp.Resources {
			got = append(got, fmt.Sprintf("%v %s: %s", r.ResourceType, r.ResourceName, codeName(r.ErrorCode)))
		}
		for _, r := range resources {
			code := int16(0)
			if r.want != nil {
				code = r.want.Code
			}
			want = append(want, fmt.Sprintf("%v %s: %s", r.kind, r.name, codeName(code)))
		}
		if strings.Join(got, "; ") != strings.Join(want, "; ") {
			tt.Errorf("IncrementalAlterConfigs v%d with %d resources:\n got  %s\n want %s", resp.Version, len(resources), strings.Join(got, "; "), strings.Join(want, "; "))
		}
		if o := describeTopic(tt, adm, other)["retention.ms"]; o != (setting{"120000", kmsg.ConfigSourceDynamicTopicConfig}) {
			tt.Errorf("retention.ms of %s after the request that changed it: %v", other, o)
		}

		// A key named twice in one resource is INVALID_REQUEST ("Error due to duplicate config
		// keys"), as in Kafka, and changes nothing.
		rs, err = adm.AlterTopicConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set("retention.ms", "7000"), set("retention.ms", "8000")}, other)
		alterRefused(tt, "a key named twice", rs, err, kerr.InvalidRequest, "duplicate config keys")
		if o := describeTopic(tt, adm, other)["retention.ms"]; o != (setting{"120000", kmsg.ConfigSourceDynamicTopicConfig}) {
			tt.Errorf("retention.ms after a refused request naming it twice: %v", o)
		}
	})

	for v := int16(0); v <= 2; v++ {
		t.Run(fmt.Sprintf("state-v%d", v), func(t *testing.T) {
			tt := begin(t)
			adm, cl := pinnedAdmin(tt, fmt.Sprintf("alter-state-v%d", v), kmsg.AlterConfigs, v)
			topic := fmt.Sprintf("alter-state-v%d", v)
			createTopic(tt, adm, topic, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact"), "segment.bytes": kadm.StringPtr("1048576")})
			plain := topic + "-defaults"
			createTopic(tt, adm, plain, 1, nil)
			defaults := describeTopic(tt, adm, plain)
			before := map[string]setting{}
			for k, d := range defaults {
				before[k] = d
			}
			before["cleanup.policy"] = setting{"compact", kmsg.ConfigSourceDynamicTopicConfig}
			before["segment.bytes"] = setting{"1048576", kmsg.ConfigSourceDynamicTopicConfig}
			expectSettings(tt, adm, topic, "CreateTopics", before)

			// Refusals and validate-only first: nothing changes.
			for _, c := range []struct {
				what    string
				configs []kadm.AlterConfig
				mention string
			}{
				{"a bad value", []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("soon")}}, "retention.ms"},
				{"an unknown key", []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("1000")}, {Name: "no.such.key", Value: kadm.StringPtr("1")}}, "no.such.key"},
			} {
				rs, err := adm.AlterTopicConfigsState(ctxFor(tt, opTimeout), c.configs, topic)
				alterRefused(tt, c.what, rs, err, kerr.InvalidConfig, c.mention)
				rs, err = adm.ValidateAlterTopicConfigsState(ctxFor(tt, opTimeout), c.configs, topic)
				alterRefused(tt, c.what+" (validate-only)", rs, err, kerr.InvalidConfig, c.mention)
			}
			rs, err := adm.AlterTopicConfigsState(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("1000")}}, "alter-no-such-topic")
			alterRefused(tt, "a missing topic", rs, err, kerr.UnknownTopicOrPartition, "alter-no-such-topic")
			rs, err = adm.AlterTopicConfigsState(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Name: "cleanup.policy", Value: kadm.StringPtr("compact")}}, "__consumer_offsets")
			alterRefused(tt, "__consumer_offsets", rs, err, kerr.InvalidRequest, "__consumer_offsets")
			rs, err = adm.AlterBrokerConfigsState(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Name: "log.retention.ms", Value: kadm.StringPtr("1000")}}, 0)
			alterRefused(tt, "broker 0", rs, err, kerr.InvalidRequest, "changing broker configs at run time is not supported by Spate yet")
			rs, err = adm.ValidateAlterTopicConfigsState(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("1000")}}, topic)
			alterOK(tt, "validate-only", rs, err)
			expectSettings(tt, adm, topic, "the refusals and validate-only", before)

			// The named configs replace the whole set.
			rs, err = adm.AlterTopicConfigsState(ctxFor(tt, opTimeout), []kadm.AlterConfig{
				{Name: "max.message.bytes", Value: kadm.StringPtr("5000")},
				{Name: "retention.ms", Value: kadm.StringPtr("120000")},
				{Name: "cleanup.policy", Value: kadm.StringPtr("compact,delete")},
			}, topic)
			alterOK(tt, "AlterConfigs of three keys", rs, err)
			want := map[string]setting{}
			for k, d := range defaults {
				want[k] = d
			}
			want["max.message.bytes"] = setting{"5000", kmsg.ConfigSourceDynamicTopicConfig}
			want["retention.ms"] = setting{"120000", kmsg.ConfigSourceDynamicTopicConfig}
			want["cleanup.policy"] = setting{"compact,delete", kmsg.ConfigSourceDynamicTopicConfig}
			expectSettings(tt, adm, topic, "AlterConfigs of three keys", want)

			// At the version asked for.
			req := kmsg.NewPtrAlterConfigsRequest()
			rr := kmsg.NewAlterConfigsRequestResource()
			rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeTopic, topic
			rc := kmsg.NewAlterConfigsRequestResourceConfig()
			rc.Name, rc.Value = "segment.ms", kmsg.StringPtr("600000")
			rr.Configs = append(rr.Configs, rc)
			req.Resources = append(req.Resources, rr)
			kr, err := cl.Broker(0).Request(ctxFor(tt, opTimeout), req)
			if err != nil {
				tt.Fatalf("AlterConfigs: %v", err)
			}
			resp := kr.(*kmsg.AlterConfigsResponse)
			if resp.Version != v || len(resp.Resources) != 1 || resp.Resources[0].ErrorCode != 0 {
				tt.Fatalf("AlterConfigs answered at v%d: %+v; want v%d, no error", resp.Version, resp.Resources, v)
			}
			want = map[string]setting{}
			for k, d := range defaults {
				want[k] = d
			}
			want["segment.ms"] = setting{"600000", kmsg.ConfigSourceDynamicTopicConfig}
			expectSettings(tt, adm, topic, fmt.Sprintf("AlterConfigs v%d of segment.ms alone", v), want)

			rs, err = adm.AlterTopicConfigsState(ctxFor(tt, opTimeout), nil, topic)
			alterOK(tt, "AlterConfigs of no keys", rs, err)
			expectSettings(tt, adm, topic, "AlterConfigs of no keys", defaults)
		})
	}
}
