package tokens

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestStoreFileSDDL(t *testing.T) {
	const user = "S-1-5-21-1004336348-1177238915-682003330-1001"
	const svc = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
	got, err := storeFileSDDL(user, []string{svc, user})
	if err != nil {
		t.Fatal(err)
	}
	want := "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;" + user + ")(A;;FA;;;" + svc + ")"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// Nothing but a SID may reach the SDDL string.
	for _, bad := range []string{"", "WD", "S-1-1-0)(A;;FA;;;WD", "BA"} {
		if _, err := storeFileSDDL(user, []string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := storeFileSDDL("", nil); err == nil {
		t.Error("no user accepted")
	}
}

// Elsewhere than Windows, privateFile is the mode.
func TestPrivateFileIsMode0600(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("a DACL, not a mode (acl_windows.go)")
	}
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Chmod(0o644); err != nil {
		t.Fatal(err)
	}
	if err := privateFile(f); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
}
