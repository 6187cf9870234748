//go:build windows

package tokens

import (
	"fmt"
	"os"

	"golang.org/x/sys/windows"
)

// privateFile makes f readable and writable by its owner only. On
// Windows a mode means nothing but the read-only attribute, so f is given
// a DACL protected from inheritance that allows LocalSystem, the
// Administrators, the user of this process (the service's account when
// serve runs as the Windows service) and StoreFileAccounts, and nobody
// else. It is called before anything is written to f.
func privateFile(f *os.File) error {
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	return restrictToOwners(f.Name())
}

// restrictToOwners replaces the DACL of the file at path (storeFileSDDL).
func restrictToOwners(path string) error {
	user, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return fmt.Errorf("cannot tell this process's user: %w", err)
	}
	sddl, err := storeFileSDDL(user.User.Sid.String(), StoreFileAccounts)
	if err != nil {
		return err
	}
	sd, err := windows.SecurityDescriptorFromString(sddl)
	if err != nil {
		return fmt.Errorf("security descriptor %s: %w", sddl, err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("security descriptor %s: %w", sddl, err)
	}
	err = windows.SetNamedSecurityInfo(path, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil)
	if err != nil {
		return fmt.Errorf("cannot restrict %s to %s (the token store needs a file system with ACLs, e.g. NTFS): %w", path, sddl, err)
	}
	return nil
}
