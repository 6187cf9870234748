package main

import (
	"crypto/sha1"
	"encoding/binary"
	"flag"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf16"
)

// mailproxy service: the Windows service (service_windows.go). What is here
// is the part every platform compiles, so that it is tested everywhere.

// serviceName is the Windows service's name, its event log source and
// its virtual account's (NT SERVICE\mailproxy).
const serviceName = "mailproxy"

// serviceOptions is one mailproxy service command line.
type serviceOptions struct {
	action  string // install, uninstall, start, stop, run
	config  string // install, run: the configuration file
	logFile string // install, run: log to this file instead of the event log
}

// parseServiceArgs reads the arguments after "service". defaultConfig is
// -config's default.
func parseServiceArgs(args []string, defaultConfig string) (serviceOptions, error) {
	if len(args) == 0 {
		return serviceOptions{}, errUsage
	}
	o := serviceOptions{action: args[0]}
	fs := flag.NewFlagSet("service "+o.action, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	switch o.action {
	case "install", "run":
		fs.StringVar(&o.config, "config", defaultConfig, "configuration file")
		fs.StringVar(&o.logFile, "log", "", "log to this file instead of the event log")
	case "uninstall", "start", "stop":
	default:
		return serviceOptions{}, errUsage
	}
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
		return serviceOptions{}, errUsage
	}
	if (o.action == "install" || o.action == "run") && o.config == "" {
		return serviceOptions{}, errUsage
	}
	return o, nil
}

// runArgs are the arguments the service manager starts the service with
// (after the program's path).
func (o serviceOptions) runArgs() []string {
	args := []string{"service", "run", "-config", o.config}
	if o.logFile != "" {
		args = append(args, "-log", o.logFile)
	}
	return args
}

// serviceSID is the SID of a service's virtual account, NT SERVICE\name:
// S-1-5-80 and the SHA-1 of the upper-cased name in UTF-16LE as five
// little-endian numbers. It exists whether or not the service does, so
// that an ACL can name it before the service is installed.
func serviceSID(name string) string {
	u := utf16.Encode([]rune(strings.ToUpper(name)))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	h := sha1.Sum(b)
	sid := "S-1-5-80"
	for i := range 5 {
		sid += "-" + strconv.FormatUint(uint64(binary.LittleEndian.Uint32(h[4*i:])), 10)
	}
	return sid
}

// dataDirSDDL is the security descriptor of the service's data directory
// (%ProgramData%\mailproxy: the configuration, secret files, the token
// store, graph state): a DACL protected from inheritance, inherited by
// what is created inside (OICI), allowing LocalSystem and the
// Administrators full access and the service's account modify (read,
// write, delete; 0x1301bf), and nobody else: ProgramData is readable by
// every user otherwise.
func dataDirSDDL(serviceSID string) string {
	return "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;0x1301bf;;;" + serviceSID + ")"
}

var (
	textLevel = regexp.MustCompile(`(?:^|\s)level=([A-Z]+)`)
	jsonLevel = regexp.MustCompile(`"level":"([A-Z]+)`)
)

// recordLevel is the level of one log line written by slog's text or
// JSON handler (DEBUG, INFO, WARN, ERROR), "" if it has none.
func recordLevel(line string) string {
	re := textLevel
	if strings.HasPrefix(line, "{") {
		re = jsonLevel
	}
	if m := re.FindStringSubmatch(line); m != nil {
		return m[1]
	}
	return ""
}
