package kubernetes

import (
	"net/url"
	"regexp"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"mailproxy/config"
)

// replicasFile is sidecar.yaml scaled out: replicas share a token store in
// PostgreSQL and keep nothing of their own that matters.
const replicasFile = "replicas.yaml"

func loadReplicas(t *testing.T) manifest {
	t.Helper()
	m := readManifest(t, replicasFile)
	if m.pvc != nil {
		t.Fatalf("%s: PersistentVolumeClaim %s: replicas keep their grants in PostgreSQL, not on a volume", m.file, m.pvc.Name)
	}
	return m
}

func TestReplicasDecodesStrictly(t *testing.T) { loadReplicas(t) }

func TestReplicasConfigurationIsTheConfigMapsAndDecodes(t *testing.T) {
	checkConfigurationIsTheConfigMaps(t, loadReplicas(t))
}

func TestReplicasSecretsComeFromTheSecret(t *testing.T) {
	checkSecretsComeFromTheSecret(t, loadReplicas(t))
}

func TestReplicasProbesAreOnTheAdminServer(t *testing.T) {
	checkProbesAreOnTheAdminServer(t, loadReplicas(t))
}

func TestReplicasListenersAreOnThePodsLoopback(t *testing.T) {
	checkListenersAreOnThePodsLoopback(t, loadReplicas(t))
}

func TestReplicasNonRootReadOnlyNoPrivileges(t *testing.T) {
	checkNonRootReadOnlyNoPrivileges(t, loadReplicas(t))
}

func TestReplicasTerminationOutlastsShutdownGrace(t *testing.T) {
	checkTerminationOutlastsShutdownGrace(t, loadReplicas(t))
}

var wholeEnvRef = regexp.MustCompile(`^\$\{env:([^}]+)\}$`)

// secretFromEnv checks that what is the secret s (at key path at) is
// exactly ${env:NAME}, and that the mailproxy container sets NAME from a
// key of the manifest's Secret; it returns that key's value in the file.
func (m manifest) secretFromEnv(t *testing.T, c *corev1.Container, at string, s config.Secret) (string, bool) {
	t.Helper()
	ref, _ := s.MarshalYAML()
	sm := wholeEnvRef.FindStringSubmatch(ref.(string))
	if sm == nil {
		t.Errorf("%s is not ${env:NAME} (inline, or a file): it must come from the Secret", at)
		return "", false
	}
	for _, e := range c.Env {
		if e.Name != sm[1] {
			continue
		}
		switch {
		case e.Value != "":
			t.Errorf("%s: env %s is a literal value in the Deployment, not a secretKeyRef", at, e.Name)
		case e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil:
			t.Errorf("%s: env %s is not from a Secret", at, e.Name)
		case e.ValueFrom.SecretKeyRef.Name != m.secret.Name:
			t.Errorf("%s: env %s is from Secret %s, not %s", at, e.Name, e.ValueFrom.SecretKeyRef.Name, m.secret.Name)
		default:
			key := e.ValueFrom.SecretKeyRef.Key
			if v, ok := m.secret.StringData[key]; ok {
				return v, true
			}
			if v, ok := m.secret.Data[key]; ok {
				return string(v), true
			}
			t.Errorf("%s: env %s: Secret %s has no key %q", at, e.Name, m.secret.Name, key)
		}
		return "", false
	}
	t.Errorf("%s reads ${env:%s}, which the mailproxy container does not set", at, sm[1])
	return "", false
}

func TestReplicasShareAPostgresStore(t *testing.T) {
	m := loadReplicas(t)
	c, _ := m.mailproxy(t)
	cfg, _ := m.config(t)
	d := m.deploy.Spec
	if d.Replicas == nil || *d.Replicas < 2 {
		t.Errorf("replicas must be more than 1: this is the example of a shared store")
	}
	if d.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Errorf("strategy %q: want RollingUpdate; nothing stops old and new pods from overlapping", d.Strategy.Type)
	}
	ts := cfg.TokenStore
	if ts == nil {
		t.Fatal("mailproxy.yaml has no token_store")
	}
	if ts.Path != "" || !ts.Postgres.IsSet() {
		t.Fatalf("token_store: want postgres and no path (path %q)", ts.Path)
	}
	m.secretFromEnv(t, c, "token_store.postgres", ts.Postgres)
	m.secretFromEnv(t, c, "token_store.key", ts.Key)
	delegated := false
	for _, name := range cfg.ProfileNames() {
		delegated = delegated || cfg.Profiles[name].Credentials.Delegated()
	}
	if !delegated {
		t.Error("no profile a person signs in to: sharing the store is for delegated grants")
	}
}

// The DSN's template in the Secret verifies the server, against a CA the
// pod has.
func TestReplicasVerifyTheDatabase(t *testing.T) {
	m := loadReplicas(t)
	c, _ := m.mailproxy(t)
	cfg, _ := m.config(t)
	if cfg.TokenStore == nil {
		t.Fatal("mailproxy.yaml has no token_store")
	}
	dsn, ok := m.secretFromEnv(t, c, "token_store.postgres", cfg.TokenStore.Postgres)
	if !ok {
		return
	}
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
		t.Fatalf("the Secret's DSN is not a postgres:// URL")
	}
	q := u.Query()
	if q.Get("sslmode") != "verify-full" {
		t.Errorf("the Secret's DSN: sslmode=%q, want verify-full (the password goes to this server)", q.Get("sslmode"))
	}
	if ca := q.Get("sslrootcert"); ca != "" && ca != "system" {
		if f, ok := m.fileAt(c, ca); !ok || (f.kind != "configMap" && f.kind != "secret") {
			t.Errorf("sslrootcert %s is not a ConfigMap's or Secret's key mounted in the container", ca)
		}
	}
}

func TestReplicasKeepNothingOfTheirOwn(t *testing.T) {
	m := loadReplicas(t)
	c, _ := m.mailproxy(t)
	cfg, _ := m.config(t)
	spec := m.deploy.Spec.Template.Spec
	for _, v := range spec.Volumes {
		if v.PersistentVolumeClaim != nil || v.Ephemeral != nil || v.HostPath != nil {
			t.Errorf("volume %s outlives the pod or is the node's: a replica keeps nothing of its own", v.Name)
		}
	}
	// What the pod writes is on an emptyDir, within its sizeLimit.
	cacheMB := map[string]int{}
	onEmptyDir := func(what, p string) (file, bool) {
		t.Helper()
		f, ok := m.fileAt(c, p)
		switch {
		case !ok || f.kind != "emptyDir":
			t.Errorf("%s %s is on no emptyDir: the read-only root cannot take it", what, p)
		case f.ro:
			t.Errorf("%s %s is mounted read-only", what, p)
		default:
			return f, true
		}
		return f, false
	}
	for _, name := range cfg.ProfileNames() {
		if g := cfg.Profiles[name].Graph; g != nil {
			if f, ok := onEmptyDir("profiles."+name+".graph.state_dir", g.StateDir); ok {
				cacheMB[f.volume] += g.CacheMB
			}
		}
	}
	for _, e := range c.Env {
		if e.Name == "STATE_DIRECTORY" {
			onEmptyDir("STATE_DIRECTORY", e.Value)
		}
	}
	for _, v := range spec.Volumes {
		mb, ok := cacheMB[v.Name]
		if !ok {
			continue
		}
		need := resource.NewQuantity(int64(mb)<<20, resource.BinarySI)
		if lim := v.EmptyDir.SizeLimit; lim == nil || lim.Cmp(*need) <= 0 {
			t.Errorf("emptyDir %s: sizeLimit must exceed the cache_mb of the mailboxes on it (%s), or the kubelet evicts the pod", v.Name, need)
		}
	}
	// The config volume's files are root's: mailproxy reads them as their
	// group (fsGroup) or as anyone.
	p := configPath(c)
	cf, _ := m.fileAt(c, p)
	for _, v := range spec.Volumes {
		if v.Name != cf.volume || v.Projected == nil {
			continue
		}
		mode := int32(0o644)
		if v.Projected.DefaultMode != nil {
			mode = *v.Projected.DefaultMode
		}
		psc := spec.SecurityContext
		if mode&0o004 == 0 && (mode&0o040 == 0 || psc == nil || psc.FSGroup == nil) {
			t.Errorf("volume %s: mode %#o without fsGroup: mailproxy (not root) cannot read %s", v.Name, mode, p)
		}
	}
}
