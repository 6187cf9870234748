// Package kubernetes holds the Kubernetes examples (sidecar.yaml, and
// replicas.yaml in replicas_test.go) and their tests: every document decodes
// strictly into the API types, and the pod keeps what README "Running in
// Kubernetes (sidecar)" promises.
package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"mailproxy/config"
)

const manifestFile = "sidecar.yaml"

// kinds are the documents a manifest may hold, by apiVersion and kind.
var kinds = map[string]func() any{
	"v1/ConfigMap":             func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                func() any { return &corev1.Secret{} },
	"v1/PersistentVolumeClaim": func() any { return &corev1.PersistentVolumeClaim{} },
	"apps/v1/Deployment":       func() any { return &appsv1.Deployment{} },
}

type manifest struct {
	file      string
	configMap *corev1.ConfigMap
	secret    *corev1.Secret
	pvc       *corev1.PersistentVolumeClaim
	deploy    *appsv1.Deployment
}

// splitDocuments returns the YAML documents of data that hold something.
func splitDocuments(data []byte) ([][]byte, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			return nil, err
		}
		if v != nil {
			docs = append(docs, doc)
		}
	}
}

// decodeStrict decodes one document into its API type: an unknown kind, an
// unknown or duplicated field, or a value of the wrong type is an error.
func decodeStrict(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q: not a kind this test knows", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

// loadManifest reads sidecar.yaml, which has a claim.
func loadManifest(t *testing.T) manifest {
	t.Helper()
	m := readManifest(t, manifestFile)
	if m.pvc == nil {
		t.Fatalf("%s: want a PersistentVolumeClaim", m.file)
	}
	return m
}

// readManifest decodes every document of file strictly; it must hold a
// ConfigMap, a Secret and a Deployment, and may hold a claim.
func readManifest(t *testing.T, file string) manifest {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := splitDocuments(data)
	if err != nil {
		t.Fatal(err)
	}
	m := manifest{file: file}
	for i, doc := range docs {
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Fatalf("%s document %d: %v", file, i+1, err)
		}
		once := func(have bool, kind, name string) {
			if have {
				t.Fatalf("%s document %d: a second %s (%s): the test expects one", file, i+1, kind, name)
			}
			if name == "" {
				t.Fatalf("%s document %d: %s without metadata.name", file, i+1, kind)
			}
		}
		switch o := obj.(type) {
		case *corev1.ConfigMap:
			once(m.configMap != nil, "ConfigMap", o.Name)
			m.configMap = o
		case *corev1.Secret:
			once(m.secret != nil, "Secret", o.Name)
			m.secret = o
		case *corev1.PersistentVolumeClaim:
			once(m.pvc != nil, "PersistentVolumeClaim", o.Name)
			m.pvc = o
		case *appsv1.Deployment:
			once(m.deploy != nil, "Deployment", o.Name)
			m.deploy = o
		}
	}
	if m.configMap == nil || m.secret == nil || m.deploy == nil {
		t.Fatalf("%s: want a ConfigMap, a Secret and a Deployment", file)
	}
	return m
}

// mailproxy returns the mailproxy container of the pod and whether it is a
// native sidecar (an init container that keeps running).
func (m manifest) mailproxy(t *testing.T) (*corev1.Container, bool) {
	t.Helper()
	spec := &m.deploy.Spec.Template.Spec
	for i := range spec.InitContainers {
		if c := &spec.InitContainers[i]; c.Name == "mailproxy" {
			if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Fatalf("init container mailproxy: restartPolicy must be Always (a native sidecar), or it blocks the app's start")
			}
			return c, true
		}
	}
	for i := range spec.Containers {
		if c := &spec.Containers[i]; c.Name == "mailproxy" {
			return c, false
		}
	}
	t.Fatal("no container named mailproxy")
	return nil, false
}

// config decodes the ConfigMap's mailproxy.yaml as mailproxy would.
func (m manifest) config(t *testing.T) (*config.Config, string) {
	t.Helper()
	text, ok := m.configMap.Data["mailproxy.yaml"]
	if !ok {
		t.Fatalf("ConfigMap %s has no mailproxy.yaml", m.configMap.Name)
	}
	cfg, err := config.Decode([]byte(text))
	if err != nil {
		t.Fatalf("ConfigMap %s, mailproxy.yaml: %v", m.configMap.Name, err)
	}
	return cfg, text
}

// configPath is the -config argument of the container (the image's CMD
// when it has no args).
func configPath(c *corev1.Container) string {
	args := c.Args
	if len(c.Command) > 0 {
		args = append(slices.Clone(c.Command[1:]), args...)
	}
	for i, a := range args {
		if (a == "-config" || a == "--config") && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "-config="); ok {
			return v
		}
	}
	for _, e := range c.Env {
		if e.Name == "MAILPROXY_CONFIG" {
			return e.Value
		}
	}
	return "/etc/mailproxy/mailproxy.yaml" // the Dockerfile's CMD
}

// file is what a path in the container is made of.
type file struct {
	volume string // volume name
	kind   string // configMap, secret, persistentVolumeClaim, emptyDir
	source string // the ConfigMap, Secret or claim's name
	key    string // the ConfigMap's or Secret's key ("" for a directory volume)
	ro     bool
}

// fileAt says which volume provides path in container c: a key of a
// ConfigMap or Secret projected to exactly that path, or a directory
// volume (a claim, an emptyDir) mounted above it.
func (m manifest) fileAt(c *corev1.Container, p string) (file, bool) {
	vols := map[string]corev1.Volume{}
	for _, v := range m.deploy.Spec.Template.Spec.Volumes {
		vols[v.Name] = v
	}
	var best file
	bestLen := -1
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			continue
		}
		rel, ok := under(p, vm.MountPath)
		if !ok {
			continue
		}
		f := file{volume: v.Name, ro: vm.ReadOnly}
		switch {
		case v.PersistentVolumeClaim != nil:
			f.kind, f.source = "persistentVolumeClaim", v.PersistentVolumeClaim.ClaimName
			f.ro = f.ro || v.PersistentVolumeClaim.ReadOnly
		case v.EmptyDir != nil:
			f.kind = "emptyDir"
		case v.ConfigMap != nil, v.Secret != nil, v.Projected != nil:
			f.ro = true
			found := false
			for _, it := range projections(v) {
				if path.Clean(it.path) == rel {
					f.kind, f.source, f.key, found = it.kind, it.source, it.key, true
				}
			}
			if !found {
				continue
			}
		default:
			continue
		}
		if len(vm.MountPath) > bestLen {
			best, bestLen = f, len(vm.MountPath)
		}
	}
	return best, bestLen >= 0
}

type projection struct{ kind, source, key, path string }

// projections are the files a ConfigMap, Secret or projected volume makes,
// as listed in its items (a volume without items is not checked here).
func projections(v corev1.Volume) []projection {
	var out []projection
	cm := func(s string, items []corev1.KeyToPath) {
		for _, it := range items {
			out = append(out, projection{"configMap", s, it.Key, it.Path})
		}
	}
	sec := func(s string, items []corev1.KeyToPath) {
		for _, it := range items {
			out = append(out, projection{"secret", s, it.Key, it.Path})
		}
	}
	switch {
	case v.ConfigMap != nil:
		cm(v.ConfigMap.Name, v.ConfigMap.Items)
	case v.Secret != nil:
		sec(v.Secret.SecretName, v.Secret.Items)
	case v.Projected != nil:
		for _, s := range v.Projected.Sources {
			if s.ConfigMap != nil {
				cm(s.ConfigMap.Name, s.ConfigMap.Items)
			}
			if s.Secret != nil {
				sec(s.Secret.Name, s.Secret.Items)
			}
		}
	}
	return out
}

// under returns p relative to dir if p is dir or below it.
func under(p, dir string) (string, bool) {
	p, dir = path.Clean(p), path.Clean(dir)
	if p == dir {
		return ".", true
	}
	if rel, ok := strings.CutPrefix(p, strings.TrimSuffix(dir, "/")+"/"); ok {
		return rel, true
	}
	return "", false
}

func TestManifestDecodesStrictly(t *testing.T) {
	loadManifest(t)
	// The strict decoder must refuse what the API server would drop.
	if _, err := decodeStrict([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndatta: {}\n")); err == nil {
		t.Error("an unknown field decoded")
	}
	if _, err := decodeStrict([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n")); err == nil {
		t.Error("a duplicated field decoded")
	}
	if _, err := decodeStrict([]byte("apiVersion: v2\nkind: ConfigMap\n")); err == nil {
		t.Error("an unknown apiVersion decoded")
	}
}

func TestOnePodWritesTheTokenStore(t *testing.T) {
	m := loadManifest(t)
	d := m.deploy.Spec
	if d.Replicas == nil || *d.Replicas != 1 {
		t.Errorf("replicas must be 1: the token store is one file one process writes")
	}
	if d.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy %q: want Recreate, so that two pods never share the volume and the store", d.Strategy.Type)
	}
	if !slices.Contains(m.pvc.Spec.AccessModes, corev1.ReadWriteOnce) {
		t.Errorf("PersistentVolumeClaim %s: want ReadWriteOnce", m.pvc.Name)
	}
}

func TestConfigurationIsTheConfigMapsAndDecodes(t *testing.T) {
	checkConfigurationIsTheConfigMaps(t, loadManifest(t))
}

func checkConfigurationIsTheConfigMaps(t *testing.T, m manifest) {
	c, _ := m.mailproxy(t)
	m.config(t) // decodes
	p := configPath(c)
	f, ok := m.fileAt(c, p)
	if !ok || f.kind != "configMap" || f.source != m.configMap.Name || f.key != "mailproxy.yaml" {
		t.Errorf("mailproxy reads %s, which is not ConfigMap %s's mailproxy.yaml (%+v)", p, m.configMap.Name, f)
	}
}

func TestStateIsOnTheVolume(t *testing.T) {
	m := loadManifest(t)
	c, _ := m.mailproxy(t)
	cfg, _ := m.config(t)
	onClaim := func(what, p string) {
		t.Helper()
		f, ok := m.fileAt(c, p)
		switch {
		case !ok || f.kind != "persistentVolumeClaim":
			t.Errorf("%s %s is on no PersistentVolumeClaim: it would not survive a restart", what, p)
		case f.source != m.pvc.Name:
			t.Errorf("%s %s is on claim %s, not %s", what, p, f.source, m.pvc.Name)
		case f.ro:
			t.Errorf("%s %s is mounted read-only", what, p)
		}
	}
	if cfg.TokenStore == nil {
		t.Fatal("mailproxy.yaml has no token_store")
	}
	onClaim("token_store.path", cfg.TokenStore.Path)
	for _, name := range cfg.ProfileNames() {
		if g := cfg.Profiles[name].Graph; g != nil {
			onClaim("profiles."+name+".graph.state_dir", g.StateDir)
		}
	}
	for _, e := range c.Env {
		if e.Name == "STATE_DIRECTORY" {
			onClaim("STATE_DIRECTORY", e.Value)
		}
	}
}

var envRef = regexp.MustCompile(`\$\{env:([^}]*)\}`)

func TestSecretsComeFromTheSecret(t *testing.T) {
	checkSecretsComeFromTheSecret(t, loadManifest(t))
}

func checkSecretsComeFromTheSecret(t *testing.T, m manifest) {
	c, _ := m.mailproxy(t)
	_, text := m.config(t)
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	refs := envRef.FindAllStringSubmatch(text, -1)
	if len(refs) == 0 {
		t.Fatal("mailproxy.yaml references no ${env:NAME}")
	}
	for _, r := range refs {
		e, ok := env[r[1]]
		switch {
		case !ok:
			t.Errorf("mailproxy.yaml reads ${env:%s}, which the mailproxy container does not set", r[1])
		case e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil:
			t.Errorf("env %s is not from a Secret", r[1])
		case e.ValueFrom.SecretKeyRef.Name != m.secret.Name:
			t.Errorf("env %s is from Secret %s, not %s", r[1], e.ValueFrom.SecretKeyRef.Name, m.secret.Name)
		}
	}
	// Every reference to the Secret, in any container, names a key it has.
	spec := m.deploy.Spec.Template.Spec
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		for _, e := range c.Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name != m.secret.Name {
				continue
			}
			key := e.ValueFrom.SecretKeyRef.Key
			if _, ok := m.secret.StringData[key]; !ok {
				if _, ok := m.secret.Data[key]; !ok {
					t.Errorf("container %s, env %s: Secret %s has no key %q", c.Name, e.Name, m.secret.Name, key)
				}
			}
		}
	}
}

func TestProbesAreOnTheAdminServer(t *testing.T) {
	checkProbesAreOnTheAdminServer(t, loadManifest(t))
}

func checkProbesAreOnTheAdminServer(t *testing.T, m manifest) {
	c, _ := m.mailproxy(t)
	cfg, _ := m.config(t)
	if cfg.Admin == nil {
		t.Fatal("mailproxy.yaml has no admin: the probes have nothing to ask")
	}
	if config.IsLoopback(cfg.Admin.Listen) {
		t.Errorf("admin.listen %s is on loopback, which the kubelet's probes cannot reach", cfg.Admin.Listen)
	}
	_, portText, err := net.SplitHostPort(cfg.Admin.Listen)
	if err != nil {
		t.Fatal(err)
	}
	adminPort, _ := strconv.Atoi(portText)
	scheme := corev1.URISchemeHTTP
	if cfg.Admin.TLS != nil {
		scheme = corev1.URISchemeHTTPS
		for what, p := range map[string]string{"admin.tls.cert_file": cfg.Admin.TLS.CertFile, "admin.tls.key_file": cfg.Admin.TLS.KeyFile} {
			if f, ok := m.fileAt(c, p); !ok || f.kind != "secret" {
				t.Errorf("%s %s is not a Secret's key mounted in the container", what, p)
			}
		}
	}
	port := func(p intstr.IntOrString) int {
		if p.Type == intstr.Int {
			return p.IntValue()
		}
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return int(cp.ContainerPort)
			}
		}
		return -1
	}
	check := func(name string, pr *corev1.Probe, paths ...string) {
		t.Helper()
		if pr == nil {
			t.Errorf("%s: none", name)
			return
		}
		g := pr.HTTPGet
		switch {
		case g == nil:
			t.Errorf("%s: not httpGet", name)
		case !slices.Contains(paths, g.Path):
			t.Errorf("%s: path %s, want %s", name, g.Path, strings.Join(paths, " or "))
		case port(g.Port) != adminPort:
			t.Errorf("%s: port %s is not admin.listen's %d", name, g.Port.String(), adminPort)
		case g.Scheme != scheme && !(g.Scheme == "" && scheme == corev1.URISchemeHTTP):
			t.Errorf("%s: scheme %q, want %s (admin.tls)", name, g.Scheme, scheme)
		case g.Host != "":
			t.Errorf("%s: host %s: probes go to the pod's address", name, g.Host)
		}
	}
	check("livenessProbe", c.LivenessProbe, "/healthz")
	check("readinessProbe", c.ReadinessProbe, "/readyz")
	if c.StartupProbe != nil {
		check("startupProbe", c.StartupProbe, "/healthz", "/readyz")
	}
}

func TestListenersAreOnThePodsLoopback(t *testing.T) {
	checkListenersAreOnThePodsLoopback(t, loadManifest(t))
}

func checkListenersAreOnThePodsLoopback(t *testing.T, m manifest) {
	cfg, _ := m.config(t)
	for _, name := range cfg.ProfileNames() {
		p := cfg.Profiles[name]
		addrs := map[string]string{}
		if p.SMTP != nil {
			addrs["smtp"] = p.SMTP.Listen
		}
		if p.IMAP != nil {
			addrs["imap"] = p.IMAP.Listen
		}
		if p.POP3 != nil {
			addrs["pop3"] = p.POP3.Listen
		}
		for proto, addr := range addrs {
			if !config.IsLoopback(addr) {
				t.Errorf("profiles.%s.%s.listen %s: a sidecar's listeners are on the pod's loopback", name, proto, addr)
			}
		}
	}
}

func TestNonRootReadOnlyNoPrivileges(t *testing.T) {
	checkNonRootReadOnlyNoPrivileges(t, loadManifest(t))
}

func checkNonRootReadOnlyNoPrivileges(t *testing.T, m manifest) {
	spec := m.deploy.Spec.Template.Spec
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("pod: securityContext.runAsNonRoot must be true")
	}
	if psc != nil && psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		t.Error("pod: runAsUser 0")
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("pod: automountServiceAccountToken must be false (mailproxy never talks to the API server)")
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s: no securityContext", c.Name)
			continue
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("container %s: runAsUser 0", c.Name)
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot {
			t.Errorf("container %s: runAsNonRoot false", c.Name)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			t.Errorf("container %s: readOnlyRootFilesystem must be true", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation must be false", c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s: privileged", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("container %s: capabilities must drop ALL and add none", c.Name)
		}
	}
}

func TestTerminationOutlastsShutdownGrace(t *testing.T) {
	checkTerminationOutlastsShutdownGrace(t, loadManifest(t))
}

func checkTerminationOutlastsShutdownGrace(t *testing.T, m manifest) {
	cfg, _ := m.config(t)
	tg := m.deploy.Spec.Template.Spec.TerminationGracePeriodSeconds
	grace := int64(cfg.ShutdownGrace.D().Seconds())
	if tg == nil || *tg <= grace {
		t.Errorf("terminationGracePeriodSeconds must be longer than shutdown_grace (%ds), or messages in flight are cut", grace)
	}
}
