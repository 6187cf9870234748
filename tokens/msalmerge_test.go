package tokens

import (
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/AzureAD/microsoft-authentication-library-for-go/apps/cache"
)

func TestMergeMSALKeepsBothSidesChanges(t *testing.T) {
	base := `{"RefreshToken":{"a":{"secret":"rt-a1"},"d":{"secret":"rt-d"}},"Account":{"a":{"username":"a"},"d":{"username":"d"}},"AppMetadata":{}}`
	// Ours: a's token rotated, b signed in, d removed.
	ours := `{"RefreshToken":{"a":{"secret":"rt-a2"},"b":{"secret":"rt-b"}},"Account":{"a":{"username":"a"},"b":{"username":"b"}},"AppMetadata":{}}`
	// Theirs (another process meanwhile): c signed in, d still there.
	theirs := `{"RefreshToken":{"a":{"secret":"rt-a1"},"c":{"secret":"rt-c"},"d":{"secret":"rt-d"}},"Account":{"a":{"username":"a"},"c":{"username":"c"},"d":{"username":"d"}},"AppMetadata":{}}`
	got, err := mergeMSAL([]byte(base), []byte(ours), []byte(theirs))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"RefreshToken":{"a":{"secret":"rt-a2"},"b":{"secret":"rt-b"},"c":{"secret":"rt-c"}},"Account":{"a":{"username":"a"},"b":{"username":"b"},"c":{"username":"c"}},"AppMetadata":{}}`
	var g, w any
	json.Unmarshal(got, &g)
	json.Unmarshal([]byte(want), &w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("merged\n%s\nwant\n%s", got, want)
	}
}

// fakeMSAL stands for an MSAL client's in-memory cache.
type fakeMSAL struct{ data []byte }

func (f *fakeMSAL) Marshal() ([]byte, error) { return f.data, nil }
func (f *fakeMSAL) Unmarshal(b []byte) error { f.data = b; return nil }

// serve and token add (two processes, two stores on one file) write the
// same app's cache in the same moment: neither write is lost.
func TestMSALCacheWritesOfTwoProcessesMerge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.enc")
	key, _ := ParseKey(NewKey())
	serveStore, addStore := newStore(t, path, key), newStore(t, path, key)
	putCache(t, serveStore, "app", []byte(`{"RefreshToken":{"alice":{"secret":"rt-alice-1"}}}`))
	serve, add := &msalCache{store: serveStore, name: "app"}, &msalCache{store: addStore, name: "app"}
	ctx := context.Background()
	sm, am := &fakeMSAL{}, &fakeMSAL{}
	serve.Replace(ctx, sm, cache.ReplaceHints{})
	add.Replace(ctx, am, cache.ReplaceHints{})
	// token add signs bob in and exports first ...
	am.data = []byte(`{"RefreshToken":{"alice":{"secret":"rt-alice-1"},"bob":{"secret":"rt-bob-1"}}}`)
	if err := add.Export(ctx, am, cache.ExportHints{}); err != nil {
		t.Fatal(err)
	}
	if err := addStore.Flush(ctx); err != nil { // as signedIn's Put does
		t.Fatal(err)
	}
	// ... while serve had read the cache before that and rotated alice's token.
	sm.data = []byte(`{"RefreshToken":{"alice":{"secret":"rt-alice-2"}}}`)
	if err := serve.Export(ctx, sm, cache.ExportHints{}); err != nil {
		t.Fatal(err)
	}
	if err := serveStore.Flush(ctx); err != nil { // as the end of Redeem does
		t.Fatal(err)
	}
	var got struct {
		RefreshToken map[string]struct{ Secret string }
	}
	json.Unmarshal(newStore(t, path, key).Cache(bg, "app"), &got)
	if got.RefreshToken["alice"].Secret != "rt-alice-2" || got.RefreshToken["bob"].Secret != "rt-bob-1" {
		t.Fatalf("after both writes: %+v", got.RefreshToken)
	}
}
