// Command floor measures the API server's floor for keyward's scale benchmark (issue 16): how long a fast
// client takes to server-side apply N Secrets like the ones keyward writes, to the same API server, in the
// same run. keyward's cold convergence is reported as a ratio to this number.
//
//	floor --kubeconfig K --namespaces a,b,c --count N [--workers 32] [--prefix floor-] [--status]
//
// Secrets are spread round-robin over the namespaces (Secret i goes to namespace i % len(namespaces)) and
// applied by --workers goroutines with field manager "floor" and force. The client's rate limit is set high
// enough that it never throttles: the point is the server's own cost, not client-go's default 5 QPS.
//
// With --status it measures keyward's other write instead: a JSON merge patch of the status of the existing
// ManagedSecrets PREFIX<i> (spread the same way), like keyward's one status write per object. The two floors
// together are what the API server needs for the writes keyward must make per new object.
//
// Prints one JSON line, {"secrets":N,"seconds":F}, where F is the wall time of the writes alone (client
// setup excluded) and N their count, and exits non-zero if any write failed.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

type result struct {
	Secrets int     `json:"secrets"`
	Seconds float64 `json:"seconds"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the API server to measure")
	namespaces := flag.String("namespaces", "", "comma-separated namespaces (must exist)")
	count := flag.Int("count", 0, "number of Secrets to apply")
	workers := flag.Int("workers", 32, "concurrent applies")
	prefix := flag.String("prefix", "floor-", "Secret name prefix; Secret i is PREFIX<i>")
	status := flag.Bool("status", false, "merge-patch the status of ManagedSecrets PREFIX<i> instead")
	flag.Parse()

	nss := strings.Split(*namespaces, ",")
	if *kubeconfig == "" || *namespaces == "" || *count <= 0 || *workers <= 0 {
		fmt.Fprintln(os.Stderr, "usage: floor --kubeconfig K --namespaces a,b,c --count N [--workers 32] [--prefix floor-]")
		os.Exit(64)
	}

	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "floor: kubeconfig: %v\n", err)
		os.Exit(1)
	}
	// client-go's defaults (5 QPS, burst 10) would measure the client's limiter, not the server.
	config.QPS = 5000
	config.Burst = 10000
	clients, err := kubernetes.NewForConfig(config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "floor: client: %v\n", err)
		os.Exit(1)
	}
	dyn, err := dynamic.NewForConfig(config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "floor: client: %v\n", err)
		os.Exit(1)
	}
	managedSecrets := schema.GroupVersionResource{Group: "keyward.dev", Version: "v1alpha1", Resource: "managedsecrets"}

	ctx := context.Background()
	next := int64(-1)
	var failed atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(atomic.AddInt64(&next, 1))
				if i >= *count {
					return
				}
				ns := nss[i%len(nss)]
				name := fmt.Sprintf("%s%d", *prefix, i)
				var err error
				if *status {
					_, err = dyn.Resource(managedSecrets).Namespace(ns).Patch(ctx, name, types.MergePatchType,
						statusPatch(name, i), metav1.PatchOptions{FieldManager: "floor"}, "status")
				} else {
					_, err = clients.CoreV1().Secrets(ns).Apply(ctx, secret(ns, name, i),
						metav1.ApplyOptions{FieldManager: "floor", Force: true})
				}
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { fmt.Fprintf(os.Stderr, "floor: write %s/%s: %v\n", ns, name, err) })
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	if n := failed.Load(); n > 0 {
		fmt.Fprintf(os.Stderr, "floor: %d of %d writes failed\n", n, *count)
		os.Exit(1)
	}
	out, _ := json.Marshal(result{Secrets: *count, Seconds: elapsed.Seconds()})
	fmt.Println(string(out))
}

// secret is what keyward writes for one ManagedSecret, in size and shape: the managed-by label, three
// bookkeeping annotations of about 64 characters and one data key of 32 bytes (keyward adds an owner
// reference too, which needs an owner that does not exist here).
func secret(ns, name string, i int) *applycorev1.SecretApplyConfiguration {
	return applycorev1.Secret(name, ns).
		WithType(corev1.SecretTypeOpaque).
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": "keyward"}).
		WithAnnotations(map[string]string{
			"keyward.dev/managed-secret": fmt.Sprintf("%s/%s-%048d", ns, name, i)[:64],
			"keyward.dev/value-hash":     fmt.Sprintf("hmac-sha256:%052x", i),
			"keyward.dev/bookkeeping":    fmt.Sprintf("hmac-sha256:%052x", i+1),
		}).
		WithData(map[string][]byte{"VALUE": []byte(fmt.Sprintf("%032d", i))})
}

// statusPatch is a status like the one keyward writes for an object's first sync, in size and shape: its
// observed generation, the Synced and Ready conditions, the target's name, the source's revision and value
// hash, and the sync time.
func statusPatch(name string, i int) []byte {
	now := time.Now().UTC().Format(time.RFC3339)
	condition := func(kind, message string) map[string]any {
		return map[string]any{"type": kind, "status": "True", "reason": "Synced", "message": message,
			"observedGeneration": 1, "lastTransitionTime": now}
	}
	body, _ := json.Marshal(map[string]any{"status": map[string]any{
		"observedGeneration": 1,
		"conditions": []any{
			condition("Synced", fmt.Sprintf("ESC environment env-%d at revision 2: the Secret holds its value", i%10)),
			condition("Ready", "the Secret holds the source's value"),
		},
		"targetName":   name,
		"source":       map[string]any{"revision": 2, "valueHash": fmt.Sprintf("hmac-sha256:%064x", i)},
		"lastSyncTime": now,
	}})
	return body
}
