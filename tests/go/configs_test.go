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
	"cleanup.policy":                          "compact",
	"compression.type":                        "zstd",
	"delete.retention.ms":                     "3600000",
	"flush.messages":                          "1000",
	"flush.ms":                                "2000",
	"follower.replication.throttled.replicas": "0:1",
	"index.interval.bytes":                    "8192",
	"leader.replication.throttled.replicas":   "*",
	"max.message.bytes":                       "2000000",
	"message.timestamp.type":                  "LogAppendTime",
	"min.insync.replicas":                     "2",
	"retention.bytes":                         "104857600",
	"retention.ms":                            "60000",
	"segment.bytes":                           "1048576",
	"segment.ms":                              "600000",
	"unclean.leader.election.enable":          "true",
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
//     that version): SET of each of the sixteen topic settings in turn (the value as set,
//     DYNAMIC_TOPIC_CONFIG; the keys not set yet still DEFAULT_CONFIG with their defaults),
//     APPEND and SUBTRACT on cleanup.policy, DELETE of all sixteen in one request (every key back
//     to its default), APPEND to a key that is not overridden (from its default);
//   - incremental-refusals: INVALID_CONFIG naming the key for a bad value, an unknown key, APPEND
//     to a key that is not a list, SUBTRACT emptying the list, and a good SET beside a bad one
//     (neither applied); a broker key on a topic INVALID_CONFIG; a missing topic
//     UNKNOWN_TOPIC_OR_PARTITION; AlterBrokerConfigs of num.partitions on broker 0 and of a topic
//     key on the cluster default INVALID_CONFIG with the broker's message; __consumer_offsets
//     INVALID_REQUEST; one raw request with several resources answers each on its own (another
//     broker's id INVALID_REQUEST; a resource named twice: INVALID_REQUEST for both);
//     ValidateAlterTopicConfigs answers as the change would and changes nothing; a key named
//     twice in one resource INVALID_REQUEST, as in Kafka;
//   - state-v0, state-v1, state-v2 (AlterTopicConfigsState, AlterConfigs pinned to that
//     version): the named configs replace all the topic's overrides, an empty set clears them;
//     the refusals as above (num.partitions on broker 0 INVALID_CONFIG);
//     ValidateAlterTopicConfigsState changes nothing.
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
		// Broker keys are refused by the broker resources only (TestAlterBrokerConfigs has more).
		rs, err = adm.AlterTopicConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set("log.retention.ms", "1000")}, topic)
		alterRefused(tt, "a broker key on a topic", rs, err, kerr.InvalidConfig, "log.retention.ms")
		rs, err = adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set("num.partitions", "3")}, 0)
		alterRefused(tt, "num.partitions on broker 0", rs, err, kerr.InvalidConfig, "num.partitions cannot be changed at run time")
		rs, err = adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set("retention.ms", "1000")})
		alterRefused(tt, "a topic key on the cluster-wide broker default", rs, err, kerr.InvalidConfig, `unknown broker config "retention.ms"`)
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
			{kmsg.ConfigResourceTypeBroker, "0", kmsg.IncrementalAlterConfigOpSet, "num.partitions", "3", kerr.InvalidConfig},
			{kmsg.ConfigResourceTypeBroker, "7", kmsg.IncrementalAlterConfigOpSet, "log.retention.ms", "1", kerr.InvalidRequest},
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
			rs, err = adm.AlterBrokerConfigsState(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Name: "num.partitions", Value: kadm.StringPtr("3")}}, 0)
			alterRefused(tt, "num.partitions on broker 0", rs, err, kerr.InvalidConfig, "num.partitions cannot be changed at run time")
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

// brokerConfig is one config as DescribeConfigs reports it, with its synonyms as
// "SOURCE:name=value" in the broker's order (the one that applies first).
type brokerConfig struct {
	value    string
	source   kmsg.ConfigSource
	synonyms string
}

func (c brokerConfig) String() string {
	return fmt.Sprintf("%s (%s) synonyms [%s]", c.value, c.source, c.synonyms)
}

func configOf(c kadm.Config) brokerConfig {
	var syns []string
	for _, s := range c.Synonyms {
		v := "<nil>"
		if s.Value != nil {
			v = *s.Value
		}
		syns = append(syns, fmt.Sprintf("%s:%s=%s", s.Source, s.Key, v))
	}
	return brokerConfig{c.MaybeValue(), c.Source, strings.Join(syns, ", ")}
}

// describeConfigs is kadm's DescribeBrokerConfigs (brokers: none for the cluster-wide default)
// or DescribeTopicConfigs (topic != ""), by key; kadm always asks for synonyms.
func describeConfigs(tt *T, adm *kadm.Client, topic string, brokers ...int32) map[string]kadm.Config {
	tt.Helper()
	var rcs kadm.ResourceConfigs
	var err error
	name := topic
	if topic != "" {
		rcs, err = adm.DescribeTopicConfigs(ctxFor(tt, opTimeout), topic)
	} else {
		rcs, err = adm.DescribeBrokerConfigs(ctxFor(tt, opTimeout), brokers...)
		name = ""
		if len(brokers) > 0 {
			name = fmt.Sprint(brokers[0])
		}
	}
	if err != nil {
		tt.Fatalf("DescribeConfigs %q: %v", name, err)
	}
	rc, err := rcs.On(name, nil)
	if err != nil || rc.Err != nil {
		tt.Fatalf("DescribeConfigs %q: %v %v (%s)", name, err, rc.Err, rc.ErrMessage)
	}
	got := map[string]kadm.Config{}
	for _, c := range rc.Configs {
		got[c.Key] = c
	}
	return got
}

// TestAlterBrokerConfigs proves broker configs changed at run time (Kafka's dynamic broker
// configs) through kadm: the broker resource "" (every broker: AlterBrokerConfigs with no broker
// id) and "0" (this one), each step read back with DescribeBrokerConfigs of broker 0 and of the
// cluster-wide default and DescribeTopicConfigs of two topics (one with its own retention.ms),
// sources and synonyms as Kafka reports them:
//   - incremental (IncrementalAlterConfigs): log.retention.ms DEFAULT_CONFIG, then SET for every
//     broker (DYNAMIC_DEFAULT_BROKER_CONFIG; the cluster-wide describe lists it alone, with
//     itself as its only synonym), ValidateAlterBrokerConfigs on broker 0 changes nothing, SET
//     on broker 0 wins (DYNAMIC_BROKER_CONFIG; synonyms: broker 0's, every broker's, the
//     default; the topic with its own value lists it first); refusals with the broker's message
//     naming the key, also validate-only (a key read at start INVALID_CONFIG, an unknown key, a
//     bad value, a value below the minimum; another broker's id, in a raw request,
//     INVALID_REQUEST "this is broker 0, not \"7\""), nothing changed; DELETE on broker 0
//     uncovers the cluster-wide value, DELETE on "" the default;
//   - state (AlterConfigs, kadm's AlterBrokerConfigsState): the named configs replace the
//     resource's whole set (a key left out goes back to the layer below), none clears it;
//     a bad value INVALID_CONFIG.
//
// The values are above the defaults (nothing of the other tests is deleted sooner), and a
// cleanup deletes every key set from both layers, since all tests share the broker. The test is
// not parallel: the others see the defaults while it runs.
func TestAlterBrokerConfigs(t *testing.T) {
	const (
		key       = "log.retention.ms"
		defaultMs = "604800000"
		clusterMs = "1209600000"
		nodeMs    = "2592000000"
	)
	restore := func(tt *T, adm *kadm.Client) {
		dels := []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: key}, {Op: kadm.DeleteConfig, Name: "log.retention.bytes"}}
		for _, brokers := range [][]int32{{0}, nil} {
			rs, err := adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), dels, brokers...)
			alterOK(tt, fmt.Sprintf("restoring the broker configs %v", brokers), rs, err)
		}
	}
	defaultLayer := "DEFAULT_CONFIG:" + key + "=" + defaultMs
	clusterLayer := "DYNAMIC_DEFAULT_BROKER_CONFIG:" + key + "=" + clusterMs
	nodeLayer := "DYNAMIC_BROKER_CONFIG:" + key + "=" + nodeMs

	t.Run("incremental", func(t *testing.T) {
		tt := begin(t)
		adm := newAdmin(tt, "broker-configs")
		t.Cleanup(func() { restore(tt, adm) })
		const plain, own = "broker-configs", "broker-configs-own"
		createTopic(tt, adm, plain, 1, nil)
		createTopic(tt, adm, own, 1, map[string]*string{"retention.ms": kadm.StringPtr("3600000")})
		ownLayer := "DYNAMIC_TOPIC_CONFIG:retention.ms=3600000"

		expect := func(after string, want brokerConfig, cluster map[string]brokerConfig) {
			tt.Helper()
			b := describeConfigs(tt, adm, "", 0)
			if got := configOf(b[key]); got != want {
				tt.Errorf("broker 0 %s after %s:\n got  %v\n want %v", key, after, got, want)
			}
			if got := configOf(describeConfigs(tt, adm, plain)["retention.ms"]); got != want {
				tt.Errorf("%s retention.ms after %s:\n got  %v\n want %v", plain, after, got, want)
			}
			wantOwn := brokerConfig{"3600000", kmsg.ConfigSourceDynamicTopicConfig, ownLayer + ", " + want.synonyms}
			if got := configOf(describeConfigs(tt, adm, own)["retention.ms"]); got != wantOwn {
				tt.Errorf("%s retention.ms after %s:\n got  %v\n want %v", own, after, got, wantOwn)
			}
			got := map[string]brokerConfig{}
			for k, c := range describeConfigs(tt, adm, "") {
				got[k] = configOf(c)
			}
			if fmt.Sprint(got) != fmt.Sprint(cluster) {
				tt.Errorf("the cluster-wide broker configs after %s:\n got  %v\n want %v", after, got, cluster)
			}
		}

		expect("nothing", brokerConfig{defaultMs, kmsg.ConfigSourceDefaultConfig, defaultLayer}, map[string]brokerConfig{})
		np := describeConfigs(tt, adm, "", 0)["num.partitions"]
		if np.Source != kmsg.ConfigSourceDefaultConfig || np.MaybeValue() != "1" {
			tt.Errorf("broker 0 num.partitions: %v", configOf(np))
		}
		// A flag the suite's broker was started with is a static broker config.
		if hb := configOf(describeConfigs(tt, adm, "", 0)["group.consumer.heartbeat.interval.ms"]); hb.source != kmsg.ConfigSourceStaticBrokerConfig ||
			hb.synonyms != "STATIC_BROKER_CONFIG:group.consumer.heartbeat.interval.ms=1000, DEFAULT_CONFIG:group.consumer.heartbeat.interval.ms=5000" {
			tt.Errorf("broker 0 group.consumer.heartbeat.interval.ms (--group-consumer-heartbeat-interval-ms 1000): %v", hb)
		}

		rs, err := adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set(key, clusterMs)})
		alterOK(tt, "SET for every broker", rs, err)
		clusterWide := brokerConfig{clusterMs, kmsg.ConfigSourceDynamicDefaultBrokerConfig, clusterLayer + ", " + defaultLayer}
		onlyCluster := map[string]brokerConfig{key: {clusterMs, kmsg.ConfigSourceDynamicDefaultBrokerConfig, clusterLayer}}
		expect("SET for every broker", clusterWide, onlyCluster)

		rs, err = adm.ValidateAlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set(key, nodeMs)}, 0)
		alterOK(tt, "validate-only SET on broker 0", rs, err)
		expect("validate-only SET on broker 0", clusterWide, onlyCluster)
		rs, err = adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{set(key, nodeMs)}, 0)
		alterOK(tt, "SET on broker 0", rs, err)
		nodeWins := brokerConfig{nodeMs, kmsg.ConfigSourceDynamicBrokerConfig, nodeLayer + ", " + clusterLayer + ", " + defaultLayer}
		expect("SET on broker 0", nodeWins, onlyCluster)

		for _, c := range []struct {
			what    string
			brokers []int32
			config  kadm.AlterConfig
			message string
		}{
			{"num.partitions on broker 0", []int32{0}, set("num.partitions", "3"), "num.partitions cannot be changed at run time (it is read at start)"},
			{"log.dirs for every broker", nil, set("log.dirs", "/tmp"), "log.dirs cannot be changed at run time (it is read at start)"},
			{"an unknown key for every broker", nil, set("no.such.broker.key", "1"), `unknown broker config "no.such.broker.key"`},
			{"a bad value on broker 0", []int32{0}, set(key, "soon"), key + ": "},
			{"a value below the minimum for every broker", nil, set("log.segment.bytes", "1"), "log.segment.bytes: "},
		} {
			rs, err := adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{c.config}, c.brokers...)
			alterRefused(tt, c.what, rs, err, kerr.InvalidConfig, c.message)
			rs, err = adm.ValidateAlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{c.config}, c.brokers...)
			alterRefused(tt, c.what+" (validate-only)", rs, err, kerr.InvalidConfig, c.message)
		}
		// Another broker's id: kadm would send it to that broker, which is not there.
		cl := newClient(tt, "broker-configs-raw")
		req := kmsg.NewPtrIncrementalAlterConfigsRequest()
		rr := kmsg.NewIncrementalAlterConfigsRequestResource()
		rr.ResourceType, rr.ResourceName = kmsg.ConfigResourceTypeBroker, "7"
		rc := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		rc.Name, rc.Op, rc.Value = key, kmsg.IncrementalAlterConfigOpSet, kmsg.StringPtr("1")
		rr.Configs = append(rr.Configs, rc)
		req.Resources = append(req.Resources, rr)
		kr, err := cl.Broker(0).Request(ctxFor(tt, opTimeout), req)
		if err != nil {
			tt.Fatalf("IncrementalAlterConfigs of broker 7: %v", err)
		}
		r := kr.(*kmsg.IncrementalAlterConfigsResponse).Resources
		if len(r) != 1 || r[0].ErrorCode != kerr.InvalidRequest.Code || r[0].ErrorMessage == nil || *r[0].ErrorMessage != `this is broker 0, not "7"` {
			tt.Errorf("IncrementalAlterConfigs of broker 7: %+v; want INVALID_REQUEST `this is broker 0, not \"7\"`", r)
		}
		expect("the refusals", nodeWins, onlyCluster)

		rs, err = adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: key}}, 0)
		alterOK(tt, "DELETE on broker 0", rs, err)
		expect("DELETE on broker 0", clusterWide, onlyCluster)
		rs, err = adm.AlterBrokerConfigs(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: key}})
		alterOK(tt, "DELETE for every broker", rs, err)
		expect("DELETE for every broker", brokerConfig{defaultMs, kmsg.ConfigSourceDefaultConfig, defaultLayer}, map[string]brokerConfig{})
	})

	t.Run("state", func(t *testing.T) {
		tt := begin(t)
		adm := newAdmin(tt, "broker-configs-state")
		t.Cleanup(func() { restore(tt, adm) })
		bytesKey := "log.retention.bytes"
		layer := func(brokers ...int32) map[string]brokerConfig {
			got := map[string]brokerConfig{}
			for k, c := range describeConfigs(tt, adm, "", brokers...) {
				if len(brokers) == 0 || c.Source == kmsg.ConfigSourceDynamicBrokerConfig {
					got[k] = brokerConfig{value: c.MaybeValue(), source: c.Source}
				}
			}
			return got
		}
		for _, step := range []struct {
			what    string
			brokers []int32
			configs []kadm.AlterConfig
			want    map[string]brokerConfig
		}{
			{"two keys for every broker", nil, []kadm.AlterConfig{{Name: key, Value: kadm.StringPtr(clusterMs)}, {Name: bytesKey, Value: kadm.StringPtr("-1")}},
				map[string]brokerConfig{key: {clusterMs, kmsg.ConfigSourceDynamicDefaultBrokerConfig, ""}, bytesKey: {"-1", kmsg.ConfigSourceDynamicDefaultBrokerConfig, ""}}},
			{"one of them for every broker", nil, []kadm.AlterConfig{{Name: bytesKey, Value: kadm.StringPtr("-1")}},
				map[string]brokerConfig{bytesKey: {"-1", kmsg.ConfigSourceDynamicDefaultBrokerConfig, ""}}},
			{"one key on broker 0", []int32{0}, []kadm.AlterConfig{{Name: key, Value: kadm.StringPtr(nodeMs)}},
				map[string]brokerConfig{key: {nodeMs, kmsg.ConfigSourceDynamicBrokerConfig, ""}}},
			{"another key on broker 0", []int32{0}, []kadm.AlterConfig{{Name: bytesKey, Value: kadm.StringPtr("-1")}},
				map[string]brokerConfig{bytesKey: {"-1", kmsg.ConfigSourceDynamicBrokerConfig, ""}}},
			{"no keys on broker 0", []int32{0}, nil, map[string]brokerConfig{}},
			{"no keys for every broker", nil, nil, map[string]brokerConfig{}},
		} {
			rs, err := adm.AlterBrokerConfigsState(ctxFor(tt, opTimeout), step.configs, step.brokers...)
			alterOK(tt, "AlterConfigs of "+step.what, rs, err)
			if got := layer(step.brokers...); fmt.Sprint(got) != fmt.Sprint(step.want) {
				tt.Errorf("after AlterConfigs of %s: %v, want %v", step.what, got, step.want)
			}
			if len(step.brokers) == 0 {
				// Broker 0 without a value of its own follows every broker's.
				if got := describeConfigs(tt, adm, "", 0)[key]; step.want[key].value == "" && got.Source != kmsg.ConfigSourceDefaultConfig {
					tt.Errorf("broker 0 %s after AlterConfigs of %s: %v, want DEFAULT_CONFIG", key, step.what, configOf(got))
				} else if step.want[key].value != "" && (got.Source != kmsg.ConfigSourceDynamicDefaultBrokerConfig || got.MaybeValue() != clusterMs) {
					tt.Errorf("broker 0 %s after AlterConfigs of %s: %v, want %s from DYNAMIC_DEFAULT_BROKER_CONFIG", key, step.what, configOf(got), clusterMs)
				}
			}
		}
		rs, err := adm.AlterBrokerConfigsState(ctxFor(tt, opTimeout), []kadm.AlterConfig{{Name: key, Value: kadm.StringPtr("soon")}})
		alterRefused(tt, "AlterConfigs of a bad value", rs, err, kerr.InvalidConfig, key+": ")
		if got := layer(); len(got) != 0 {
			tt.Errorf("the cluster-wide broker configs after a refused AlterConfigs: %v", got)
		}
	})
}
