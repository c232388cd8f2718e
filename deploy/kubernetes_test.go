package deploy

import (
	"fmt"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/shipper-agent/shipper"
	"github.com/shipper-agent/shipper/agent"
)

// agentContainer names the agent's container in the DaemonSet.
const agentContainer = "shipper"

// k8s is the DaemonSet, the agent's container, and the configuration the
// container reads, parsed with the environment the container gets.
type k8s struct {
	ms      []manifest
	ds      *appsv1.DaemonSet
	dsFile  string // for messages: "deploy/kubernetes/daemonset.yaml"
	c       corev1.Container
	cmFile  string
	cfg     agent.Config
	env     map[string]string
	cfgPath string // where the container reads the configuration
}

// where names a field of the agent's container in messages.
func (k k8s) where(field string) string {
	return fmt.Sprintf("%s: container %q %s", k.dsFile, k.c.Name, field)
}

func loadK8s(t *testing.T) k8s {
	t.Helper()
	k := k8s{ms: loadManifests(t)}
	var m manifest
	k.ds, m = only[*appsv1.DaemonSet](t, k.ms)
	k.dsFile = m.file
	i := slices.IndexFunc(k.ds.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == agentContainer })
	if i < 0 {
		t.Fatalf("%s: no container named %q", k.dsFile, agentContainer)
	}
	k.c = k.ds.Spec.Template.Spec.Containers[i]

	// The configuration: the -config argument, the volume mounted over
	// its directory, and the ConfigMap key that volume projects there.
	args := k.c.Args
	if len(args) != 3 || args[0] != "run" || args[1] != "-config" {
		t.Fatalf("%s = %q, want [run -config FILE]", k.where("args"), args)
	}
	k.cfgPath = args[2]
	cm, key := k.configMapAt(t, k.cfgPath)
	src, ok := cm.Data[key]
	if !ok {
		t.Fatalf("%s: ConfigMap %q has no key %q, which %s mounts at %s", k.cmFile, cm.Name, key, k.dsFile, k.cfgPath)
	}
	k.env = containerEnv(t, k)
	cfg, err := parseConfig(t, k.cmFile+": "+key, []byte(src), k.env)
	if err != nil {
		t.Fatalf("the configuration in %s, with the environment of %s, does not load:\n%v", k.cmFile, k.where("env"), err)
	}
	k.cfg = cfg
	return k
}

// configMapAt finds the ConfigMap and key the agent's container sees at path.
func (k *k8s) configMapAt(t *testing.T, path string) (*corev1.ConfigMap, string) {
	t.Helper()
	for _, vm := range k.c.VolumeMounts {
		if vm.SubPath != "" || !strings.HasPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/") {
			continue
		}
		file := strings.TrimPrefix(path, strings.TrimSuffix(vm.MountPath, "/")+"/")
		for _, v := range k.ds.Spec.Template.Spec.Volumes {
			if v.Name != vm.Name || v.ConfigMap == nil {
				continue
			}
			key := file
			if len(v.ConfigMap.Items) > 0 {
				key = ""
				for _, it := range v.ConfigMap.Items {
					if it.Path == file {
						key = it.Key
					}
				}
			}
			for _, m := range k.ms {
				if cm, ok := m.obj.(*corev1.ConfigMap); ok && cm.Name == v.ConfigMap.Name && key != "" {
					k.cmFile = m.file
					if !vm.ReadOnly {
						t.Errorf("%s: volumeMounts %q: want readOnly: the agent never writes its configuration", k.where(""), vm.Name)
					}
					return cm, key
				}
			}
		}
	}
	t.Fatalf("%s: no ConfigMap under %s provides %s, the -config argument", k.where("volumeMounts"), rel(kubeDir), path)
	return nil, ""
}

// secretRef is what an env var filled from a Secret holds while the
// configuration is parsed, so a setting can be traced to its Secret.
func secretRef(name, key string) string { return "secret:" + name + "/" + key }

// containerEnv is the agent's environment: literal values as they are,
// Secret references as secretRef. Other sources are refused so that a new
// one gets a thought (and a check) before it is used.
func containerEnv(t *testing.T, k k8s) map[string]string {
	t.Helper()
	if len(k.c.EnvFrom) > 0 {
		t.Errorf("%s: envFrom hides which variables the agent gets; list them under env", k.where("envFrom"))
	}
	env := map[string]string{}
	for _, e := range k.c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = secretRef(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
		default:
			t.Errorf("%s %s: only literal values and secretKeyRef are checked here", k.where("env"), e.Name)
		}
	}
	return env
}

// The Go soft limit in the pod is the one the agent computes from its
// configuration, and the container's memory limit leaves room above it.
// When a size in the ConfigMap changes, this says what to write.
func TestMemorySizing(t *testing.T) {
	k := loadK8s(t)
	soft := k.cfg.SoftMemoryLimit()
	explain := fmt.Sprintf("%s's buffer.memory_limit %s + overhead %s (agent.Config.MemoryOverhead) = %s",
		k.cmFile, k.cfg.Buffer.MemoryLimit, shipper.ByteSize(k.cfg.MemoryOverhead()), shipper.ByteSize(soft))

	gml, ok := k.env["GOMEMLIMIT"]
	switch {
	case !ok:
		t.Errorf("%s: no GOMEMLIMIT; want %s: %s", k.where("env"), shipper.ByteSize(soft), explain)
	case strings.HasPrefix(gml, "secret:"):
		t.Errorf("%s GOMEMLIMIT: want a literal value", k.where("env"))
	default:
		got, err := runtimeMemoryLimit(t, gml)
		if err != nil {
			t.Errorf("%s GOMEMLIMIT: %v", k.where("env"), err)
		} else if got != soft {
			t.Errorf("%s GOMEMLIMIT = %q (%s), want %s: %s", k.where("env"), gml, mib(got), shipper.ByteSize(soft), explain)
		}
	}

	limit, hasLimit := k.c.Resources.Limits[corev1.ResourceMemory]
	request, hasRequest := k.c.Resources.Requests[corev1.ResourceMemory]
	if !hasLimit {
		t.Fatalf("%s: no limits.memory", k.where("resources"))
	}
	if want := soft + memoryHeadroom; limit.Value() < want {
		t.Errorf("%s limits.memory = %s (%s), want at least %s: the soft limit %s plus %s of headroom",
			k.where("resources"), limit.String(), mib(limit.Value()), mib(want), mib(soft), mib(memoryHeadroom))
	}
	if !hasRequest || request.Cmp(limit) != 0 {
		t.Errorf("%s requests.memory = %s, want %s, equal to limits.memory: the scheduler must reserve what the agent may use",
			k.where("resources"), request.String(), limit.String())
	}
}

// Kubernetes waits terminationGracePeriodSeconds after SIGTERM before it
// kills; the agent needs shutdown_timeout and then some to close.
func TestGracePeriodOutlastsShutdown(t *testing.T) {
	k := loadK8s(t)
	grace := k.ds.Spec.Template.Spec.TerminationGracePeriodSeconds
	want := k.cfg.ShutdownTimeout + closeMargin*time.Second
	if grace == nil {
		t.Fatalf("%s: spec.template.spec.terminationGracePeriodSeconds unset (Kubernetes' default is 30s); want at least %s: %s's shutdown_timeout %s + %ds",
			k.dsFile, want, k.cmFile, k.cfg.ShutdownTimeout, closeMargin)
	}
	if got := time.Duration(*grace) * time.Second; got < want {
		t.Errorf("%s: spec.template.spec.terminationGracePeriodSeconds = %d, want at least %.0f: %s's shutdown_timeout %s + %ds",
			k.dsFile, *grace, want.Seconds(), k.cmFile, k.cfg.ShutdownTimeout, closeMargin)
	}
}

// The probes reach the health endpoints on the port api.address listens on.
func TestProbes(t *testing.T) {
	k := loadK8s(t)
	_, port, err := net.SplitHostPort(k.cfg.API.Address)
	if err != nil {
		t.Fatalf("%s: api.address %q: %v", k.cmFile, k.cfg.API.Address, err)
	}
	apiPort, _ := strconv.Atoi(port)
	if k.cfg.API.Token == "" {
		t.Errorf("%s: api.token unset; the API must listen beyond loopback for the kubelet's probes", k.cmFile)
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", k.c.StartupProbe, "/api/health/live"},
		{"livenessProbe", k.c.LivenessProbe, "/api/health/live"},
		{"readinessProbe", k.c.ReadinessProbe, "/api/health/ready"},
	} {
		field := k.where(p.name)
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe of %s", field, p.path)
			continue
		}
		g := p.probe.HTTPGet
		if g.Path != p.path {
			t.Errorf("%s.httpGet.path = %q, want %q", field, g.Path, p.path)
		}
		if g.Scheme != "" && g.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s.httpGet.scheme = %q: the API serves plain HTTP", field, g.Scheme)
		}
		if got := k.containerPort(g.Port); got != apiPort {
			t.Errorf("%s.httpGet.port %s is container port %d, want %d, the port of %s's api.address %q",
				field, g.Port.String(), got, apiPort, k.cmFile, k.cfg.API.Address)
		}
	}
	// The startup probe holds the liveness probe off until the API
	// answers, so liveness can be strict without killing a slow start.
	if k.c.StartupProbe != nil && k.c.StartupProbe.FailureThreshold*k.c.StartupProbe.PeriodSeconds < 30 {
		t.Errorf("%s: failureThreshold × periodSeconds = %ds; opening a large buffer and binding the API may take longer (want ≥ 30s)",
			k.where("startupProbe"), k.c.StartupProbe.FailureThreshold*k.c.StartupProbe.PeriodSeconds)
	}

	a := k.ds.Spec.Template.Annotations
	if a["prometheus.io/scrape"] == "true" {
		if a["prometheus.io/port"] != port || a["prometheus.io/path"] != "/api/metrics" {
			t.Errorf("%s: spec.template.metadata.annotations prometheus.io/port = %q, path = %q; want %q and /api/metrics",
				k.dsFile, a["prometheus.io/port"], a["prometheus.io/path"], port)
		}
	}
}

// containerPort resolves a probe's port, by number or by name.
func (k k8s) containerPort(p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range k.c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return -1
}

// The buffer is on the node: a hostPath mounted at data_dir, writable, and
// one pod per node at any time, updates included.
func TestBufferOnHostPath(t *testing.T) {
	k := loadK8s(t)
	spec := k.ds.Spec.Template.Spec
	if !strings.HasPrefix(k.cfg.Buffer.Dir, strings.TrimSuffix(k.cfg.DataDir, "/")+"/") {
		t.Errorf("%s: buffer.dir %q is outside data_dir %q, which is what the hostPath holds", k.cmFile, k.cfg.Buffer.Dir, k.cfg.DataDir)
	}
	i := slices.IndexFunc(k.c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.MountPath == k.cfg.DataDir })
	if i < 0 {
		t.Fatalf("%s: nothing mounted at data_dir %q (%s): the buffer would be on the container's filesystem, lost with the pod",
			k.where("volumeMounts"), k.cfg.DataDir, k.cmFile)
	}
	vm := k.c.VolumeMounts[i]
	if vm.ReadOnly || vm.SubPath != "" {
		t.Errorf("%s %q: want writable and without subPath", k.where("volumeMounts"), vm.Name)
	}
	j := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == vm.Name })
	if j < 0 || spec.Volumes[j].HostPath == nil {
		t.Fatalf("%s: spec.template.spec.volumes %q must be a hostPath: a pod restarted on the node drains its predecessor's buffer", k.dsFile, vm.Name)
	}
	hp := spec.Volumes[j].HostPath
	if hp.Type == nil || *hp.Type != corev1.HostPathDirectoryOrCreate {
		t.Errorf("%s: volumes %q hostPath.type = %v, want DirectoryOrCreate", k.dsFile, vm.Name, deref(hp.Type))
	}
	if !strings.HasPrefix(hp.Path, "/") || hp.Path == "/" {
		t.Errorf("%s: volumes %q hostPath.path = %q, want a directory of its own", k.dsFile, vm.Name, hp.Path)
	}

	u := k.ds.Spec.UpdateStrategy
	if u.Type != appsv1.RollingUpdateDaemonSetStrategyType || u.RollingUpdate == nil ||
		u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.String() != "1" {
		t.Errorf("%s: spec.updateStrategy = %+v, want RollingUpdate with maxUnavailable 1", k.dsFile, u)
	}
	if u.RollingUpdate != nil && u.RollingUpdate.MaxSurge != nil && u.RollingUpdate.MaxSurge.String() != "0" {
		t.Errorf("%s: spec.updateStrategy.rollingUpdate.maxSurge = %s: a surge pod would share its node's buffer directory with the old one",
			k.dsFile, u.RollingUpdate.MaxSurge.String())
	}
}

// The agent runs without privilege; the one init container that needs
// some gets only what a chown of the buffer directory takes.
func TestSecurityContext(t *testing.T) {
	k := loadK8s(t)
	pod := k.ds.Spec.Template.Spec
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Errorf("%s: spec.template.spec shares the host's network, PID or IPC namespace", k.dsFile)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: spec.template.spec.automountServiceAccountToken must be false: the agent never calls the Kubernetes API", k.dsFile)
	}
	sa, m := only[*corev1.ServiceAccount](t, k.ms)
	if pod.ServiceAccountName != sa.Name {
		t.Errorf("%s: spec.template.spec.serviceAccountName = %q, want %q (%s)", k.dsFile, pod.ServiceAccountName, sa.Name, m.file)
	}

	sc := k.c.SecurityContext
	if sc == nil {
		t.Fatalf("%s: no securityContext", k.where(""))
	}
	uid, gid := effective(sc.RunAsUser, psc.RunAsUser), effective(sc.RunAsGroup, psc.RunAsGroup)
	checkLocked(t, k.where("securityContext"), sc, psc, nil)
	if nonRoot := effective(sc.RunAsNonRoot, psc.RunAsNonRoot); nonRoot == nil || !*nonRoot {
		t.Errorf("%s.runAsNonRoot: want true", k.where("securityContext"))
	}
	if uid == nil || *uid == 0 || gid == nil || *gid == 0 {
		t.Fatalf("%s: runAsUser and runAsGroup: want set and not 0, got %v, %v", k.where("securityContext"), deref(uid), deref(gid))
	}

	owner := fmt.Sprintf("%d:%d", *uid, *gid)
	for _, c := range pod.InitContainers {
		where := fmt.Sprintf("%s: initContainer %q securityContext", k.dsFile, c.Name)
		if c.SecurityContext == nil {
			t.Errorf("%s: unset", where)
			continue
		}
		checkLocked(t, where, c.SecurityContext, psc, []corev1.Capability{"CHOWN", "FOWNER"})
		// It exists to give the buffer directory to the agent's user.
		script := strings.Join(append(c.Command, c.Args...), " ")
		if !strings.Contains(script, "chown "+owner+" ") {
			t.Errorf("%s: command does not chown to the agent's %s (runAsUser:runAsGroup): %q", where, owner, script)
		}
	}
}

func checkLocked(t *testing.T, where string, sc *corev1.SecurityContext, psc *corev1.PodSecurityContext, mayAdd []corev1.Capability) {
	t.Helper()
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s.privileged: want false", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s.allowPrivilegeEscalation: want false", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s.readOnlyRootFilesystem: want true", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s.capabilities.drop: want [ALL]", where)
	} else {
		for _, c := range sc.Capabilities.Add {
			if !slices.Contains(mayAdd, c) {
				t.Errorf("%s.capabilities.add: %s is more than this container needs (at most %v)", where, c, mayAdd)
			}
		}
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s.seccompProfile (or the pod's): want type RuntimeDefault", where)
	}
}

// effective is a container's setting, else the pod's.
func effective[T any](container, pod *T) *T {
	if container != nil {
		return container
	}
	return pod
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// placeholder is the one form a Secret's value may take in this tree.
var placeholder = regexp.MustCompile(`^<placeholder: [^<>]+>$`)

// suspectName is an environment variable whose value would be a credential.
var suspectName = regexp.MustCompile(`(?i)token|passw|secret|api_?key|credential|private`)

// No credential is written in the tree: Secrets hold placeholders only,
// credentials reach the agent through secretKeyRef, and every secret
// setting the configuration ends up with came from a Secret.
func TestNoCredentialsInManifests(t *testing.T) {
	k := loadK8s(t)
	secrets := map[string]*corev1.Secret{}
	for _, m := range k.ms {
		s, ok := m.obj.(*corev1.Secret)
		if !ok {
			continue
		}
		secrets[s.Name] = s
		if len(s.Data) > 0 {
			t.Errorf("%s: data: write placeholders under stringData; base64 hides whether a value is real", m)
		}
		for key, v := range s.StringData {
			if !placeholder.MatchString(v) {
				t.Errorf("%s: stringData.%s = %q is not a placeholder (want \"<placeholder: what goes here>\")", m, key, v)
			}
		}
	}
	for _, c := range append(slices.Clone(k.ds.Spec.Template.Spec.InitContainers), k.ds.Spec.Template.Spec.Containers...) {
		for _, e := range c.Env {
			if suspectName.MatchString(e.Name) && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
				t.Errorf("%s: container %q env %s: a credential must come from a secretKeyRef", k.dsFile, c.Name, e.Name)
			}
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				continue
			}
			ref := e.ValueFrom.SecretKeyRef
			s, ok := secrets[ref.Name]
			if !ok {
				t.Errorf("%s: container %q env %s: Secret %q is not described under %s", k.dsFile, c.Name, e.Name, ref.Name, rel(kubeDir))
			} else if _, ok := s.StringData[ref.Key]; !ok {
				t.Errorf("%s: container %q env %s: Secret %q has no key %q", k.dsFile, c.Name, e.Name, ref.Name, ref.Key)
			}
			if ref.Optional != nil && *ref.Optional {
				t.Errorf("%s: container %q env %s: optional: a missing credential must stop the pod from starting", k.dsFile, c.Name, e.Name)
			}
		}
	}
	n := 0
	walkSecrets(reflect.ValueOf(k.cfg), "", func(path string, s shipper.Secret) {
		if s == "" {
			return
		}
		n++
		if !strings.HasPrefix(s.Reveal(), "secret:") {
			t.Errorf("%s: %s is written in the file; give it as env(\"NAME\") with NAME from a secretKeyRef", k.cmFile, path)
		}
	})
	if n == 0 {
		t.Errorf("%s: no secret setting is set; expected at least api.token", k.cmFile)
	}
}

// walkSecrets calls f with every shipper.Secret in v and its HCL path.
func walkSecrets(v reflect.Value, path string, f func(string, shipper.Secret)) {
	if v.Type() == reflect.TypeFor[shipper.Secret]() {
		f(path, v.Interface().(shipper.Secret))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			sf := v.Type().Field(i)
			if !sf.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(sf.Tag.Get("hcl"), ",")
			if name == "" {
				name = sf.Name
			}
			if path != "" {
				name = path + "." + name
			}
			walkSecrets(v.Field(i), name, f)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			walkSecrets(v.Index(i), fmt.Sprintf("%s[%d]", path, i), f)
		}
	case reflect.Pointer:
		if !v.IsNil() {
			walkSecrets(v.Elem(), path, f)
		}
	}
}
