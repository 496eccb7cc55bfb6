package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type k8sObject struct {
	file string
	doc  map[string]any
}

func (o k8sObject) kind() string      { return s(o.doc["kind"]) }
func (o k8sObject) name() string      { return s(get(o.doc, "metadata", "name")) }
func (o k8sObject) namespace() string { return s(get(o.doc, "metadata", "namespace")) }
func (o k8sObject) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.kind(), o.namespace(), o.name(), o.file)
}

// manifests decodes every document of every manifest listed in the kustomization.
func manifests(t testing.TB) []k8sObject {
	t.Helper()
	var out []k8sObject
	for _, f := range strs(yamlFile(t, deployPath(t, "kubernetes", "kustomization.yaml"))["resources"]) {
		for _, doc := range yamlDocs(t, deployPath(t, "kubernetes", f)) {
			out = append(out, k8sObject{f, doc})
		}
	}
	return out
}

func find(t testing.TB, objs []k8sObject, kind, ns, name string) k8sObject {
	t.Helper()
	for _, o := range objs {
		if o.kind() == kind && o.namespace() == ns && o.name() == name {
			return o
		}
	}
	t.Fatalf("no %s %s/%s in the manifests", kind, ns, name)
	return k8sObject{}
}

// podSpec returns the pod template spec of a workload.
func podSpec(o k8sObject) map[string]any { return m(get(o.doc, "spec", "template", "spec")) }

// allContainers lists init containers (native sidecars included) and containers.
func allContainers(pod map[string]any) []map[string]any {
	var out []map[string]any
	for _, c := range append(l(pod["initContainers"]), l(pod["containers"])...) {
		out = append(out, m(c))
	}
	return out
}

func container(t testing.TB, pod map[string]any, name string) map[string]any {
	t.Helper()
	for _, c := range allContainers(pod) {
		if s(c["name"]) == name {
			return c
		}
	}
	t.Fatalf("pod has no container %q", name)
	return nil
}

func num(v any) int { f, _ := v.(float64); return int(f) }

func TestKubernetesManifestsParse(t *testing.T) {
	dir := deployPath(t, "kubernetes")
	k := yamlFile(t, filepath.Join(dir, "kustomization.yaml"))
	if s(k["kind"]) != "Kustomization" {
		t.Errorf("kustomization.yaml kind = %q", s(k["kind"]))
	}
	listed := strs(k["resources"])
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(listed, base) {
			t.Errorf("%s is not listed in kustomization.yaml resources", base)
		}
	}
	for _, r := range listed {
		if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
			t.Errorf("kustomization.yaml lists %s: %v", r, err)
		}
	}
	namespaces := map[string]bool{}
	objs := manifests(t)
	for _, o := range objs {
		if o.kind() == "Namespace" {
			namespaces[o.name()] = true
		}
	}
	seen := map[string]bool{}
	for _, o := range objs {
		if s(o.doc["apiVersion"]) == "" || o.kind() == "" || o.name() == "" {
			t.Errorf("%s: a document lacks apiVersion, kind or metadata.name", o.file)
		}
		if o.kind() != "Namespace" && !namespaces[o.namespace()] {
			t.Errorf("%s: namespace %q is not one of the manifests' namespaces", o, o.namespace())
		}
		if key := o.kind() + "/" + o.namespace() + "/" + o.name(); seen[key] {
			t.Errorf("%s is defined twice", o)
		} else {
			seen[key] = true
		}
	}
	for _, img := range k8sImages(objs) {
		if !imagePinned(img) {
			t.Errorf("image %q is not pinned by tag", img)
		}
	}
	for _, img := range l(k["images"]) {
		if tag := s(get(img, "newTag")); tag == "" || tag == "latest" {
			t.Errorf("kustomization image %s has tag %q", s(get(img, "name")), tag)
		}
	}
}

func k8sImages(objs []k8sObject) []string {
	var out []string
	for _, o := range objs {
		for _, c := range allContainers(podSpec(o)) {
			out = append(out, s(c["image"]))
		}
	}
	return out
}

func TestKubernetesEtcd(t *testing.T) {
	objs := manifests(t)
	sts := find(t, objs, "StatefulSet", "warden", "etcd")
	replicas := num(get(sts.doc, "spec", "replicas"))
	if replicas != 3 {
		t.Errorf("etcd replicas = %d, want 3", replicas)
	}
	svc := find(t, objs, "Service", "warden", s(get(sts.doc, "spec", "serviceName")))
	if s(get(svc.doc, "spec", "clusterIP")) != "None" {
		t.Errorf("%s is not headless", svc)
	}
	c := container(t, podSpec(sts), "etcd")
	if got, want := s(c["image"]), "quay.io/coreos/etcd:"+etcdVersion(t); got != want {
		t.Errorf("etcd image = %s, want %s (the release wardend embeds)", got, want)
	}
	args := map[string]string{}
	for _, a := range strs(c["command"]) {
		if k, v, ok := strings.Cut(a, "="); ok {
			args[k] = v
		}
	}
	var members []string
	for i := range replicas {
		members = append(members, fmt.Sprintf("etcd-%d=https://etcd-%d.%s.warden.svc:2380", i, i, s(get(svc.doc, "metadata", "name"))))
	}
	if got := args["--initial-cluster"]; got != strings.Join(members, ",") {
		t.Errorf("--initial-cluster = %s, want %s", got, strings.Join(members, ","))
	}
	for _, flag := range []string{"--client-cert-auth", "--peer-client-cert-auth"} {
		if args[flag] != "true" {
			t.Errorf("etcd %s = %q, want true", flag, args[flag])
		}
	}
	for _, flag := range []string{"--listen-client-urls", "--listen-peer-urls", "--advertise-client-urls", "--initial-advertise-peer-urls"} {
		if !strings.HasPrefix(args[flag], "https://") {
			t.Errorf("etcd %s = %q is not TLS", flag, args[flag])
		}
	}
	pdb := find(t, objs, "PodDisruptionBudget", "warden", "etcd")
	if got := num(get(pdb.doc, "spec", "minAvailable")); got != replicas/2+1 {
		t.Errorf("etcd PDB minAvailable = %d, want quorum %d", got, replicas/2+1)
	}
	if secret := s(get(volumeNamed(t, podSpec(sts), "tls"), "secret", "secretName")); secret == "" {
		t.Error("etcd TLS does not come from a Secret")
	}
}

func volumeNamed(t testing.TB, pod map[string]any, name string) map[string]any {
	t.Helper()
	for _, v := range l(pod["volumes"]) {
		if s(get(v, "name")) == name {
			return m(v)
		}
	}
	t.Fatalf("pod has no volume %q", name)
	return nil
}

// mountPathOf finds where a container mounts a volume.
func mountPathOf(c map[string]any, volume string) string {
	for _, vm := range l(c["volumeMounts"]) {
		if s(get(vm, "name")) == volume {
			return s(get(vm, "mountPath"))
		}
	}
	return ""
}

func TestKubernetesWardend(t *testing.T) {
	objs := manifests(t)
	dep := find(t, objs, "Deployment", "warden", "wardend")
	if got := num(get(dep.doc, "spec", "replicas")); got != 3 {
		t.Errorf("wardend replicas = %d, want 3", got)
	}
	pod := podSpec(dep)
	if get(pod, "affinity", "podAntiAffinity") == nil {
		t.Error("wardend has no pod anti-affinity")
	}
	c := container(t, pod, "wardend")

	// The embedded configuration goes through wardend's real loader.
	cm := find(t, objs, "ConfigMap", "warden", "wardend-config")
	path := filepath.Join(t.TempDir(), "wardend.yaml")
	if err := os.WriteFile(path, []byte(s(get(cm.doc, "data", "wardend.yaml"))), 0o600); err != nil {
		t.Fatal(err)
	}
	args := strs(c["args"])
	if !slices.Equal(args, []string{"--config", "/etc/warden/wardend.yaml"}) {
		t.Errorf("wardend args = %v", args)
	}
	env := map[string]string{}
	for _, e := range l(c["env"]) {
		env[s(get(e, "name"))] = "from-pod" // values from fieldRef/secretKeyRef are filled in by Kubernetes
	}
	cfg, err := loadWardend(t, []string{"--config", path}, env)
	if err != nil {
		t.Fatalf("ConfigMap wardend-config: %v", err)
	}

	ports := map[string]int{}
	for _, p := range l(c["ports"]) {
		ports[s(get(p, "name"))] = num(get(p, "containerPort"))
	}
	if !strings.HasSuffix(cfg.Listen, fmt.Sprintf(":%d", ports["grpc"])) || !strings.HasSuffix(cfg.MetricsListen, fmt.Sprintf(":%d", ports["metrics"])) {
		t.Errorf("listen %s / metrics-listen %s do not match container ports %v", cfg.Listen, cfg.MetricsListen, ports)
	}
	// The kubelet's grpc probe cannot do TLS; readiness must use /healthz on the metrics port.
	for _, probe := range []string{"readinessProbe", "livenessProbe", "startupProbe"} {
		if get(c, probe, "grpc") != nil {
			t.Errorf("%s uses a grpc probe, which cannot speak TLS to wardend", probe)
		}
	}
	if p := s(get(c, "readinessProbe", "httpGet", "path")); p != "/healthz" || s(get(c, "readinessProbe", "httpGet", "port")) != "metrics" {
		t.Errorf("readinessProbe = %v, want httpGet /healthz on the metrics port", get(c, "readinessProbe"))
	}

	// Every file wardend reads is on a mounted volume, and the endpoints are the StatefulSet's members.
	var mounts []string
	for _, vm := range l(c["volumeMounts"]) {
		mounts = append(mounts, s(get(vm, "mountPath")))
	}
	for _, f := range []string{cfg.EtcdCACert, cfg.EtcdCert, cfg.EtcdKey, cfg.SealKeyFile, cfg.DataDir} {
		if !slices.ContainsFunc(mounts, func(d string) bool { return f == d || strings.HasPrefix(f, d+"/") }) {
			t.Errorf("wardend reads %s but nothing is mounted there (%v)", f, mounts)
		}
	}
	sts := find(t, objs, "StatefulSet", "warden", "etcd")
	if n := num(get(sts.doc, "spec", "replicas")); len(cfg.EtcdEndpoints) != n {
		t.Errorf("etcd-endpoints %v, want the %d members", cfg.EtcdEndpoints, n)
	}
	for i, ep := range cfg.EtcdEndpoints {
		if want := fmt.Sprintf("https://etcd-%d.etcd.warden.svc:2379", i); ep != want {
			t.Errorf("etcd endpoint %d = %s, want %s", i, ep, want)
		}
	}
	svc := find(t, objs, "Service", "warden", "wardend")
	for _, n := range []string{"wardend", "wardend.warden.svc"} {
		if !slices.Contains(cfg.ServerNames, n) {
			t.Errorf("server-names %v lack %s, the name agents dial (Service %s)", cfg.ServerNames, n, svc.name())
		}
	}

	// The seal key: a Secret mounted 0400, copied to a memory volume that the wardend container reads.
	src := volumeNamed(t, pod, "seal-src")
	if mode := num(get(src, "secret", "defaultMode")); mode != 0o400 {
		t.Errorf("seal Secret defaultMode = %04o, want 0400", mode)
	}
	if mountPathOf(c, "seal-src") != "" {
		t.Error("the wardend container mounts the seal Secret itself: under fsGroup it is group-readable and wardend refuses it")
	}
	sealDir := mountPathOf(c, "seal")
	if sealDir == "" || !strings.HasPrefix(cfg.SealKeyFile, sealDir+"/") {
		t.Errorf("seal-key-file %s is not on the seal volume (mounted at %q)", cfg.SealKeyFile, sealDir)
	}
	if s(get(volumeNamed(t, pod, "seal"), "emptyDir", "medium")) != "Memory" {
		t.Error("the seal key copy is not on a memory-backed volume")
	}
	if get(find(t, objs, "PodDisruptionBudget", "warden", "wardend").doc, "spec") == nil {
		t.Error("wardend PodDisruptionBudget has no spec")
	}
	checkRestricted(t, dep)
}

// checkRestricted asserts the container-level settings of Pod Security "restricted" on Warden's pods.
func checkRestricted(t *testing.T, o k8sObject) {
	t.Helper()
	pod := podSpec(o)
	for _, c := range allContainers(pod) {
		sc := m(c["securityContext"])
		if ape, ok := sc["allowPrivilegeEscalation"].(bool); !ok || ape {
			t.Errorf("%s container %s: allowPrivilegeEscalation must be false", o, s(c["name"]))
		}
		if !slices.Contains(strs(get(sc, "capabilities", "drop")), "ALL") {
			t.Errorf("%s container %s: capabilities must drop ALL", o, s(c["name"]))
		}
		nonRoot, _ := get(pod, "securityContext", "runAsNonRoot").(bool)
		if own, ok := sc["runAsNonRoot"].(bool); ok {
			nonRoot = own
		}
		if !nonRoot {
			t.Errorf("%s container %s: runAsNonRoot is not set", o, s(c["name"]))
		}
	}
}

func TestKubernetesNetworkPolicies(t *testing.T) {
	objs := manifests(t)
	type rule struct {
		from  []string // app.kubernetes.io/name of allowed peer pods, or "ipBlock"
		ports []string // "port" or "port-endPort"
	}
	policies := map[string][]rule{} // selected app → ingress rules
	defaultDeny := map[string]bool{}
	for _, o := range objs {
		if o.kind() != "NetworkPolicy" {
			continue
		}
		spec := m(o.doc["spec"])
		sel := s(get(spec, "podSelector", "matchLabels", "app.kubernetes.io/name"))
		if len(m(get(spec, "podSelector"))) == 0 && len(l(spec["ingress"])) == 0 && slices.Contains(strs(spec["policyTypes"]), "Ingress") {
			defaultDeny[o.namespace()] = true
			continue
		}
		for _, in := range l(spec["ingress"]) {
			var r rule
			for _, from := range l(get(in, "from")) {
				switch {
				case get(from, "ipBlock") != nil:
					r.from = append(r.from, "ipBlock")
				default:
					r.from = append(r.from, s(get(from, "podSelector", "matchLabels", "app.kubernetes.io/name")))
				}
			}
			for _, p := range l(get(in, "ports")) {
				port := fmt.Sprint(num(get(p, "port")))
				if e := num(get(p, "endPort")); e != 0 {
					port += fmt.Sprintf("-%d", e)
				}
				r.ports = append(r.ports, port)
			}
			policies[o.namespace()+"/"+sel] = append(policies[o.namespace()+"/"+sel], r)
		}
	}
	for _, ns := range []string{"waent", "warden"} {
		if !defaultDeny[ns] {
			t.Errorf("namespace %s has no default-deny ingress policy", ns)
		}
	}
	// What may reach each port: every rule that opens it, and no more.
	allowed := func(app, port string) []string {
		var out []string
		for _, r := range policies[app] {
			if slices.Contains(r.ports, port) {
				out = append(out, r.from...)
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	cases := []struct {
		app, port string
		want      []string
	}{
		{"waent/db", "3306", []string{"wacore", "waweb"}},
		{"waent/wacore", "6250-6251", []string{"waweb"}},
		{"waent/wacore", "6252-6253", []string{"wacore"}},
		{"waent/waweb", "443", []string{"ipBlock"}},
		{"warden/etcd", "2379", []string{"wardend"}},
		{"warden/etcd", "2380", []string{"etcd"}},
	}
	for _, tc := range cases {
		t.Run(tc.app+":"+tc.port, func(t *testing.T) {
			if got := allowed(tc.app, tc.port); !slices.Equal(got, tc.want) {
				t.Errorf("%s port %s reachable from %v, want %v", tc.app, tc.port, got, tc.want)
			}
		})
	}
	for app, rules := range policies {
		if app == "waent/db" {
			for _, r := range rules {
				if !slices.Equal(r.ports, []string{"3306"}) {
					t.Errorf("db opens %v", r.ports)
				}
			}
		}
		if app == "waent/wacore" {
			for _, r := range rules {
				if slices.Contains(r.from, "ipBlock") || slices.Contains(r.from, "") {
					t.Errorf("wacore accepts traffic beyond Webapps and Coreapps: %v", r.from)
				}
			}
		}
	}
}

func TestKubernetesAgentSidecar(t *testing.T) {
	objs := manifests(t)
	dep := find(t, objs, "Deployment", "waent", "waweb")
	pod := podSpec(dep)
	agent := container(t, pod, "warden-agent")
	app := container(t, pod, "waweb")
	if !strings.Contains(s(agent["image"]), "warden-agent") {
		t.Errorf("sidecar image %s is not warden-agent", s(agent["image"]))
	}
	if s(agent["restartPolicy"]) != "Always" {
		t.Error("the agent is not a native sidecar (initContainers with restartPolicy: Always): the app could start before its credentials exist")
	}
	var shared string
	for _, vm := range l(app["volumeMounts"]) {
		if s(get(vm, "mountPath")) == appDataDir {
			shared = s(get(vm, "name"))
		}
	}
	if shared == "" || mountPathOf(agent, shared) != appDataDir {
		t.Fatalf("agent and app do not share a volume at %s (app volume %q, agent mounts it at %q)", appDataDir, shared, mountPathOf(agent, shared))
	}
	v := volumeNamed(t, pod, shared)
	if v["emptyDir"] == nil && v["persistentVolumeClaim"] == nil {
		t.Errorf("data volume %s is neither an emptyDir nor a PVC", shared)
	}
	if !strings.Contains(strings.Join(strs(app["command"]), " "), appDataDir+"/warden.env") {
		t.Error("the app does not read warden.env")
	}
	// The NetworkPolicy that opens wardend to agents selects this pod.
	labels := m(get(dep.doc, "spec", "template", "metadata", "labels"))
	if s(labels["warden.io/agent"]) != "true" {
		t.Error("the pod lacks the warden.io/agent=true label that networkpolicies.yaml admits to wardend")
	}
	cm := find(t, objs, "ConfigMap", "waent", "warden-agent-waweb")
	args := strs(agent["args"])
	if len(args) != 2 || args[0] != "--config" || mountPathOf(agent, "agent-config") != args[1] {
		t.Errorf("agent args %v do not read the mounted ConfigMap (at %q)", args, mountPathOf(agent, "agent-config"))
	}
	cfg := checkAgentConfigMap(t, "ConfigMap warden-agent-waweb", s(get(cm.doc, "data", "warden-agent.yaml")), agentEnvNames(agent))
	if cfg.Role != "webapp" || cfg.DataDir != appDataDir {
		t.Errorf("agent role %q data-dir %q, want webapp at %s", cfg.Role, cfg.DataDir, appDataDir)
	}
	if !slices.ContainsFunc(cfg.Servers, func(s string) bool { return strings.HasPrefix(s, "wardend.warden.svc:") }) {
		t.Errorf("agent servers %v do not include the wardend Service", cfg.Servers)
	}
}

func agentEnvNames(c map[string]any) []string {
	var out []string
	for _, e := range l(c["env"]) {
		out = append(out, s(get(e, "name")))
	}
	return out
}
