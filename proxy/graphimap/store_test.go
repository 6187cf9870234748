package graphimap

import (
	"fmt"
	"slices"
	"testing"

	"github.com/emersion/go-imap"

	"mailproxy/upstream/graph/mirror"
)

func TestResolveSequenceAndUIDSets(t *testing.T) {
	v := view{snap: mirror.Snapshot{List: []mirror.Entry{{UID: 3}, {UID: 7}, {UID: 8}, {UID: 20}}}}
	v.set(mirror.Entry{UID: 7, Flags: mirror.Seen})
	for _, c := range []struct {
		uid  bool
		set  string
		want string // seq:uid
	}{
		{false, "1:*", "1:3 2:7 3:8 4:20"},
		{false, "*", "4:20"},
		{false, "3,1,1:2", "1:3 2:7 3:8"},
		{false, "5:9", ""},
		{true, "7:8", "2:7 3:8"},
		{true, "21:*", "4:20"}, // RFC 3501 §6.4.8: n:* includes the highest UID
		{true, "4:6", ""},
		{true, "*:1", "1:3 2:7 3:8 4:20"},
	} {
		set, err := imap.ParseSeqSet(c.set)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range v.resolve(c.uid, set) {
			got = append(got, fmt.Sprintf("%d:%d", r.seq, r.e.UID))
			if r.e.UID == 7 && r.e.Flags != mirror.Seen {
				t.Error("resolve did not take the session's own change")
			}
		}
		if s := fmt.Sprint(got); s != "["+c.want+"]" {
			t.Errorf("uid=%v %s: %s, want [%s]", c.uid, c.set, s, c.want)
		}
	}
}

func TestStoreMapsFlagsToGraph(t *testing.T) {
	e := mirror.Entry{Flags: mirror.Draft, Keywords: []string{"$Work"}, Other: []string{"Red category"}}
	n := apply(e, imap.SetFlags, []string{imap.SeenFlag, imap.AnsweredFlag, "$work", "$todo"})
	if n.Flags != mirror.Seen|mirror.Answered|mirror.Draft || !slices.Equal(n.Keywords, []string{"$Work", "$todo"}) {
		t.Fatalf("after STORE FLAGS: %v %q (\\Draft stays; a keyword keeps its category's spelling)", n.Flags, n.Keywords)
	}
	p := patch(e, n)
	if p["isRead"] != true || p["flag"] != nil || fmt.Sprint(p["singleValueExtendedProperties"]) != "[map[id:Integer 0x1081 value:102]]" ||
		fmt.Sprint(p["categories"]) != "[Red category $Work $todo]" {
		t.Fatalf("patch %v", p)
	}
	if p := patch(n, apply(n, imap.AddFlags, []string{imap.DeletedFlag})); p != nil {
		t.Fatalf("\\Deleted is mailproxy's own: patch %v", p)
	}
	r := apply(n, imap.RemoveFlags, []string{imap.AnsweredFlag, "$WORK"})
	if r.Flags != mirror.Seen|mirror.Draft || !slices.Equal(r.Keywords, []string{"$todo"}) {
		t.Fatalf("after -FLAGS: %v %q", r.Flags, r.Keywords)
	}
	if p := patch(n, r); fmt.Sprint(p["singleValueExtendedProperties"]) != "[map[id:Integer 0x1081 value:0]]" {
		t.Fatalf("clearing \\Answered: %v", p)
	}
}

func TestUIDList(t *testing.T) {
	if s := uidList([]uint32{1, 2, 3, 5, 7, 8}); s != "1:3,5,7:8" {
		t.Fatal(s)
	}
}
