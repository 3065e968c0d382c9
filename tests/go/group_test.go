package spatego

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	groupPartitions = 4
	groupWait       = 30 * time.Second // a join, a rebalance, a takeover
)

// member is a group consumer whose rebalance callbacks are recorded.
type member struct {
	*Client
	mu      sync.Mutex
	owned   partitionSet // assigned minus revoked and lost (only assigned if revocations are not tracked)
	history []string
}

func (m *member) ownedNow() partitionSet {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := partitionSet{}
	for p, ok := range m.owned {
		out[p] = ok
	}
	return out
}

func (m *member) historyString() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return strings.Join(m.history, ", ")
}

func (m *member) note(what string, ps map[string][]int32, own bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for topic, parts := range ps {
		sorted := append([]int32(nil), parts...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		m.history = append(m.history, fmt.Sprintf("%s %s%v", what, topic, sorted))
		for _, p := range parts {
			m.owned[p] = own
		}
	}
}

// groupCase is one way of running a group: the classic protocol with a client-side balancer, or
// KIP-848 with the broker's assignor of that name.
type groupCase struct {
	name     string
	kip848   bool
	balancer func() kgo.GroupBalancer
	protocol string // the assignor the broker reports: the classic protocol's name, or KIP-848's server assignor
}

// TestConsumerGroup proves, under the classic protocol (cooperative-sticky and eager range) and
// under KIP-848 (ConsumerGroupHeartbeat, the broker's uniform and range assignors), that:
//   - a first member gets all 4 partitions, and when a second joins the broker's view of the
//     group (DescribeGroups / ConsumerGroupDescribe) splits them 2 and 2, matching what each
//     member's OnPartitionsAssigned said, under the assignor asked for;
//   - the two members read each of the 100 records exactly once between them, each only from
//     its own partitions;
//   - explicit commits land: CommitRecords (offset 10) then CommitUncommittedOffsets (25) on
//     member B's partitions, read back with OffsetFetch;
//   - member A, with autocommit (and no interval commit before the test ends), commits nothing
//     until it leaves, and its leave commits its partitions at 25 (commit on revoke);
//   - B then takes over all 4 partitions and reads only the 40 records produced afterwards,
//     never one below the committed offsets;
//   - after B commits and leaves, a restarted member resumes exactly at the committed offsets;
//   - the clients spoke the protocol asked for (JoinGroup/SyncGroup, or ConsumerGroupHeartbeat
//     and no JoinGroup), and ListGroups reports the group with that type, also when filtering
//     by type and by state.
func TestConsumerGroup(t *testing.T) {
	for _, c := range []groupCase{
		{"classic-cooperative-sticky", false, kgo.CooperativeStickyBalancer, "cooperative-sticky"},
		{"classic-range", false, kgo.RangeBalancer, "range"},
		{"kip848-uniform", true, kgo.CooperativeStickyBalancer, "uniform"}, // franz-go asks for "uniform"
		{"kip848-range", true, kgo.RangeBalancer, "range"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runGroupCase(begin(t), c)
		})
	}
}

func runGroupCase(tt *T, c groupCase) {
	topic := "group-" + c.name
	group := "g-" + c.name
	adm := newAdmin(tt, group+"-admin")
	createTopic(tt, adm, topic, groupPartitions, nil)
	prod := newClient(tt, group+"-producer", kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceRound := func(from, count int) {
		var rs []*kgo.Record
		for p := range int32(groupPartitions) {
			for i := from; i < from+count; i++ {
				rs = append(rs, &kgo.Record{Topic: topic, Partition: p, Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "p%d-%d", p, i)})
			}
		}
		produceSync(tt, prod, rs...)
	}
	produceRound(0, 25) // offsets 0-24 in each partition

	newMember := func(name string, trackRevoke bool, opts ...kgo.Opt) *member {
		m := &member{owned: partitionSet{}}
		all := []kgo.Opt{
			kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(topic),
			kgo.Balancers(c.balancer()),
			kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()),
			kgo.SessionTimeout(10 * time.Second),
			kgo.HeartbeatInterval(500 * time.Millisecond),
			kgo.RebalanceTimeout(20 * time.Second),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { m.note("assigned", ps, true) }),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { m.note("lost", ps, false) }),
		}
		if trackRevoke {
			all = append(all, kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, ps map[string][]int32) { m.note("revoked", ps, false) }))
		}
		if c.kip848 {
			all = append(all, kgo.ServerSideBalancer())
		}
		m.Client = newClient(tt, name, append(all, opts...)...)
		return m
	}

	// committed is the group's committed offsets of the topic (OffsetFetch), absent where none.
	committed := func() map[int32]int64 {
		resp, err := adm.FetchOffsets(ctxFor(tt, opTimeout), group)
		if err != nil {
			tt.Fatalf("OffsetFetch %s: %v", group, err)
		}
		out := map[int32]int64{}
		for p, o := range resp[topic] {
			if o.Err != nil {
				tt.Fatalf("OffsetFetch %s: %s[%d]: %v", group, topic, p, o.Err)
			}
			if o.At >= 0 {
				out[p] = o.At
			}
		}
		return out
	}
	expectCommitted := func(what string, want map[int32]int64) {
		tt.Helper()
		got := committed()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			tt.Fatalf("%s: committed offsets %v, want %v", what, got, want)
		}
	}

	// A: franz-go's default autocommit, with the interval pushed past the test, and no revoke
	// callback of ours, so franz-go's own commit-on-revoke is what commits A's offsets.
	a := newMember(group+"-a", false, kgo.AutoCommitInterval(time.Hour))
	eventually(tt, groupWait, "the first member gets every partition", func() string {
		if got := a.ownedNow(); len(got) != groupPartitions {
			return fmt.Sprintf("member a owns %v (callbacks: %s)", got, a.historyString())
		}
		return ""
	})

	// B: manual commits; its revocations are tracked.
	b := newMember(group+"-b", true, kgo.DisableAutoCommit())
	var split map[string]partitionSet
	eventually(tt, groupWait, "the two members split the partitions 2 and 2", func() string {
		var assignor, problem string
		split, assignor, problem = describeAssignment(tt, adm, group, topic, c.kip848)
		if problem != "" {
			return problem
		}
		if assignor != c.protocol {
			return fmt.Sprintf("the broker describes the group's assignor as %q, want %q", assignor, c.protocol)
		}
		sa, sb := split[a.name], split[b.name]
		if len(split) != 2 || len(sa) != 2 || len(sb) != 2 {
			return fmt.Sprintf("the broker describes the group's assignment as %v", split)
		}
		for p := range sa {
			if sb[p] {
				return fmt.Sprintf("partition %d is assigned to both members: %v", p, split)
			}
		}
		if got := b.ownedNow(); fmt.Sprint(got) != fmt.Sprint(sb) {
			return fmt.Sprintf("member b's callbacks say it owns %v, the broker says %v (callbacks: %s)", got, sb, b.historyString())
		}
		return ""
	})
	aParts, bParts := split[a.name], split[b.name]
	tt.Logf("split: a %v, b %v; a's callbacks: %s; b's: %s", aParts, bParts, a.historyString(), b.historyString())

	// Phase 1: the 100 records, exactly once between the two members.
	seen := map[int32]map[int64]string{}
	var bRecords []*kgo.Record
	take := func(who string, own partitionSet, rs []*kgo.Record) {
		for _, r := range rs {
			if !own[r.Partition] {
				tt.Errorf("member %s read %d[%d], a partition it was not assigned (%v)", who, r.Partition, r.Offset, own)
			}
			if seen[r.Partition] == nil {
				seen[r.Partition] = map[int64]string{}
			}
			if prev, dup := seen[r.Partition][r.Offset]; dup {
				tt.Errorf("%d[%d] read twice: by %s and by %s", r.Partition, r.Offset, prev, who)
			}
			seen[r.Partition][r.Offset] = who
		}
	}
	countSeen := func() int {
		n := 0
		for _, m := range seen {
			n += len(m)
		}
		return n
	}
	deadline := time.Now().Add(phaseTimeout)
	for countSeen() < groupPartitions*25 {
		if time.Now().After(deadline) {
			tt.Fatalf("the members read %d of %d records within %v", countSeen(), groupPartitions*25, phaseTimeout)
		}
		take("a", aParts, pollFor(tt, a.Client, 200*time.Millisecond))
		rs := pollFor(tt, b.Client, 200*time.Millisecond)
		take("b", bParts, rs)
		bRecords = append(bRecords, rs...)
	}
	for p := range int32(groupPartitions) {
		for o := range int64(25) {
			if _, ok := seen[p][o]; !ok {
				tt.Errorf("%d[%d] was never read", p, o)
			}
		}
	}
	// One more (empty) poll each: nothing more may come, and franz-go's autocommit counts A's
	// records as processed only once A polls again.
	if rs := pollFor(tt, a.Client, 300*time.Millisecond); len(rs) > 0 {
		tt.Errorf("member a read %d more records, first %d[%d]", len(rs), rs[0].Partition, rs[0].Offset)
	}
	if rs := pollFor(tt, b.Client, 300*time.Millisecond); len(rs) > 0 {
		tt.Errorf("member b read %d more records, first %d[%d]", len(rs), rs[0].Partition, rs[0].Offset)
	}
	if tt.Failed() {
		tt.FailNow()
	}

	// B commits explicitly: CommitRecords up to offset 9, then everything it read.
	var upTo10 []*kgo.Record
	for _, r := range bRecords {
		if r.Offset == 9 {
			upTo10 = append(upTo10, r)
		}
	}
	if err := b.CommitRecords(ctxFor(tt, opTimeout), upTo10...); err != nil {
		tt.Fatalf("member b: CommitRecords: %v", err)
	}
	want := map[int32]int64{}
	for p := range bParts {
		want[p] = 10
	}
	expectCommitted("after b's CommitRecords of offset 9 (a has committed nothing yet)", want)
	if err := b.CommitUncommittedOffsets(ctxFor(tt, opTimeout)); err != nil {
		tt.Fatalf("member b: CommitUncommittedOffsets: %v", err)
	}
	for p := range bParts {
		want[p] = 25
	}
	expectCommitted("after b's CommitUncommittedOffsets", want)

	// A leaves; franz-go commits its offsets as its partitions are revoked.
	a.Close()
	for p := range aParts {
		want[p] = 25
	}
	expectCommitted("after a left (autocommit on revoke)", want)

	// B takes over A's partitions.
	eventually(tt, groupWait, "the remaining member takes over every partition", func() string {
		got, _, problem := describeAssignment(tt, adm, group, topic, c.kip848)
		if problem != "" {
			return problem
		}
		if len(got) != 1 || len(got[b.name]) != groupPartitions {
			return fmt.Sprintf("the broker describes the group's assignment as %v", got)
		}
		if owned := b.ownedNow(); len(owned) != groupPartitions {
			return fmt.Sprintf("member b's callbacks say it owns %v (callbacks: %s)", owned, b.historyString())
		}
		return ""
	})

	// Phase 2: B reads what comes next, and nothing it or A committed.
	produceRound(25, 10) // offsets 25-34
	expectRange(tt, "member b after the takeover", consumeN(tt, b.Client, groupPartitions*10), 25, 35)
	if rs := pollFor(tt, b.Client, 300*time.Millisecond); len(rs) > 0 {
		tt.Errorf("member b read %d more records, first %d[%d]", len(rs), rs[0].Partition, rs[0].Offset)
	}
	if err := b.CommitUncommittedOffsets(ctxFor(tt, opTimeout)); err != nil {
		tt.Fatalf("member b: CommitUncommittedOffsets: %v", err)
	}
	for p := range int32(groupPartitions) {
		want[p] = 35
	}
	expectCommitted("after b's second commit", want)
	b.Close()

	// Phase 3: a restarted member resumes from the committed offsets.
	produceRound(35, 5) // offsets 35-39
	r := newMember(group+"-b-restarted", true, kgo.DisableAutoCommit())
	expectRange(tt, "the restarted member", consumeN(tt, r.Client, groupPartitions*5), 35, 40)
	if rs := pollFor(tt, r.Client, 300*time.Millisecond); len(rs) > 0 {
		tt.Errorf("the restarted member read %d more records, first %d[%d]", len(rs), rs[0].Partition, rs[0].Offset)
	}
	if err := r.CommitUncommittedOffsets(ctxFor(tt, opTimeout)); err != nil {
		tt.Fatalf("the restarted member: CommitUncommittedOffsets: %v", err)
	}
	for p := range int32(groupPartitions) {
		want[p] = 40
	}
	expectCommitted("after the restarted member's commit", want)

	// The group as ListGroups sees it while the restarted member is in it.
	listed, err := adm.ListGroups(ctxFor(tt, opTimeout))
	if err != nil {
		tt.Fatalf("ListGroups: %v", err)
	}
	wantType := "classic"
	if c.kip848 {
		wantType = "consumer"
	}
	if lg, ok := listed[group]; !ok {
		tt.Errorf("ListGroups does not list %s: %v", group, listed.Groups())
	} else if lg.GroupType != wantType || lg.State != "Stable" || lg.ProtocolType != "consumer" {
		tt.Errorf("ListGroups: %s has type %q, state %q, protocol type %q; want %q, Stable, consumer", group, lg.GroupType, lg.State, lg.ProtocolType, wantType)
	}
	for _, f := range []struct {
		what  string
		call  func() (kadm.ListedGroups, error)
		wants bool
	}{
		{"type " + wantType, func() (kadm.ListedGroups, error) {
			return adm.ListGroupsByType(ctxFor(tt, opTimeout), []string{wantType})
		}, true},
		{"type share", func() (kadm.ListedGroups, error) {
			return adm.ListGroupsByType(ctxFor(tt, opTimeout), []string{"share"})
		}, false},
		{"state Stable", func() (kadm.ListedGroups, error) { return adm.ListGroups(ctxFor(tt, opTimeout), "Stable") }, true},
		{"state Empty", func() (kadm.ListedGroups, error) { return adm.ListGroups(ctxFor(tt, opTimeout), "Empty") }, false},
	} {
		listed, err := f.call()
		if err != nil {
			tt.Errorf("ListGroups filtered by %s: %v", f.what, err)
		} else if _, ok := listed[group]; ok != f.wants {
			tt.Errorf("ListGroups filtered by %s: %s listed %v, want %v", f.what, group, ok, f.wants)
		}
	}
	r.Close()

	// Which protocol the members really spoke.
	for _, m := range []*member{a, b, r} {
		joins, hbs := m.requests.count(kmsg.JoinGroup), m.requests.count(kmsg.ConsumerGroupHeartbeat)
		if c.kip848 && (hbs == 0 || joins > 0) {
			tt.Errorf("%s sent %d ConsumerGroupHeartbeat and %d JoinGroup requests; KIP-848 wants only the former (requests: %s)", m.name, hbs, joins, m.requests)
		}
		if !c.kip848 && (joins == 0 || hbs > 0 || m.requests.count(kmsg.SyncGroup) == 0) {
			tt.Errorf("%s sent %d JoinGroup and %d ConsumerGroupHeartbeat requests; the classic protocol wants only JoinGroup and SyncGroup (requests: %s)", m.name, joins, hbs, m.requests)
		}
	}
}

// expectRange checks that rs hold each offset in [from, to) of every partition exactly once, in
// order per partition.
func expectRange(tt *T, who string, rs []*kgo.Record, from, to int64) {
	tt.Helper()
	next := map[int32]int64{}
	for p := range int32(groupPartitions) {
		next[p] = from
	}
	for _, r := range rs {
		if r.Offset < from {
			tt.Errorf("%s read %d[%d], below the committed offset %d", who, r.Partition, r.Offset, from)
			continue
		}
		if r.Offset != next[r.Partition] {
			tt.Errorf("%s read %d[%d], want offset %d next", who, r.Partition, r.Offset, next[r.Partition])
		}
		next[r.Partition] = r.Offset + 1
		if want := fmt.Sprintf("p%d-%d", r.Partition, r.Offset); string(r.Value) != want {
			tt.Errorf("%s read %d[%d] = %q, want %q", who, r.Partition, r.Offset, r.Value, want)
		}
	}
	for p, n := range next {
		if n != to {
			tt.Errorf("%s read partition %d up to offset %d, want %d", who, p, n, to)
		}
	}
	if tt.Failed() {
		tt.FailNow()
	}
}

// describeAssignment asks the broker for the group's members' assignments of topic, by client
// id, and the group's assignor: DescribeGroups for a classic group, ConsumerGroupDescribe for a
// KIP-848 one. A non-empty last string says why it could not.
func describeAssignment(tt *T, adm *kadm.Client, group, topic string, kip848 bool) (map[string]partitionSet, string, string) {
	out := map[string]partitionSet{}
	if kip848 {
		resp, err := adm.DescribeConsumerGroups(ctxFor(tt, opTimeout), group)
		if err != nil {
			return nil, "", fmt.Sprintf("ConsumerGroupDescribe: %v", err)
		}
		g := resp[group]
		if g.Err != nil {
			return nil, "", fmt.Sprintf("ConsumerGroupDescribe %s: %v", group, g.Err)
		}
		for _, m := range g.Members {
			s := partitionSet{}
			for p := range m.Assignment[topic] {
				s[p] = true
			}
			out[m.ClientID] = s
		}
		return out, g.AssignorName, ""
	}
	resp, err := adm.DescribeGroups(ctxFor(tt, opTimeout), group)
	if err != nil {
		return nil, "", fmt.Sprintf("DescribeGroups: %v", err)
	}
	g := resp[group]
	if g.Err != nil {
		return nil, "", fmt.Sprintf("DescribeGroups %s: %v (%s)", group, g.Err, g.ErrMessage)
	}
	for _, m := range g.Members {
		s := partitionSet{}
		if ca, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range ca.Topics {
				if t.Topic == topic {
					for _, p := range t.Partitions {
						s[p] = true
					}
				}
			}
		}
		out[m.ClientID] = s
	}
	return out, g.Protocol, ""
}
