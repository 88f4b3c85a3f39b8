// Command kstatus reads Kubernetes objects and prints, for each, the health that Flux and
// other kstatus users compute: sigs.k8s.io/cli-utils' status.Compute, and the result of the
// healthCheckExprs of a Flux Kustomization (evaluated with cel-go in the environment and the
// order Flux uses: observedGeneration first, then inProgress, failed, current).
//
//	kstatus [-flux-kustomization FILE] < objects.json
//
// Input: a JSON array of objects. Output: a JSON array, one entry per object:
// {"kstatus": "Current", "message": "...", "flux": "Current", "fluxError": ""}.
// "flux" is empty when no healthCheckExprs entry matches the object's apiVersion and kind.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/ext"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

type healthCheckExpr struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Current    string `json:"current"`
	InProgress string `json:"inProgress"`
	Failed     string `json:"failed"`
}

type fluxKustomization struct {
	Spec struct {
		HealthCheckExprs []healthCheckExpr `json:"healthCheckExprs"`
	} `json:"spec"`
}

type result struct {
	KStatus   string `json:"kstatus"`
	Message   string `json:"message"`
	Flux      string `json:"flux"`
	FluxError string `json:"fluxError,omitempty"`
}

// program parses expr in an environment with the options Flux's runtime/cel uses for health
// checks (parsed, not compiled: the object's top-level fields are untyped variables).
func program(expr string) (cel.Program, error) {
	env, err := cel.NewEnv(
		cel.HomogeneousAggregateLiterals(),
		cel.EagerlyValidateDeclarations(true),
		cel.DefaultUTCTimeZone(true),
		cel.CrossTypeNumericComparisons(true),
		cel.OptionalTypes(),
		ext.Strings(),
		ext.Sets(),
		ext.Encoders(),
	)
	if err != nil {
		return nil, err
	}
	ast, issues := env.Parse(expr)
	if issues != nil && issues.Err() != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, issues.Err())
	}
	return env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.InterruptCheckFrequency(100))
}

func evalBool(expr string, obj map[string]any) (bool, error) {
	prg, err := program(expr)
	if err != nil {
		return false, err
	}
	val, _, err := prg.ContextEval(context.Background(), obj)
	if err != nil {
		return false, fmt.Errorf("evaluate %q: %w", expr, err)
	}
	b, ok := val.(types.Bool)
	if !ok {
		return false, fmt.Errorf("%q is not a boolean", expr)
	}
	return bool(b), nil
}

// fluxStatus follows Flux's StatusEvaluator (RFC 0009).
func fluxStatus(h healthCheckExpr, u *unstructured.Unstructured) (string, error) {
	obj := u.UnstructuredContent()
	observed, ok, err := unstructured.NestedInt64(obj, "status", "observedGeneration")
	if err != nil {
		return "", err
	}
	if ok {
		gen, ok, err := unstructured.NestedInt64(obj, "metadata", "generation")
		if err != nil {
			return "", err
		}
		if ok && gen != observed {
			return string(status.InProgressStatus), nil
		}
	}
	for _, e := range []struct {
		expr   string
		status status.Status
	}{
		{h.InProgress, status.InProgressStatus},
		{h.Failed, status.FailedStatus},
		{h.Current, status.CurrentStatus},
	} {
		if e.expr == "" {
			continue
		}
		ok, err := evalBool(e.expr, obj)
		if err != nil {
			return "", err
		}
		if ok {
			return string(e.status), nil
		}
	}
	return string(status.InProgressStatus), nil
}

func run() error {
	fluxFile := flag.String("flux-kustomization", "", "Flux Kustomization YAML with spec.healthCheckExprs")
	flag.Parse()

	var exprs []healthCheckExpr
	if *fluxFile != "" {
		data, err := os.ReadFile(*fluxFile)
		if err != nil {
			return err
		}
		var k fluxKustomization
		if err := yaml.UnmarshalStrict(data, &k, yaml.DisallowUnknownFields); err != nil {
			// Only spec.healthCheckExprs is modelled; read leniently.
			if err := yaml.Unmarshal(data, &k); err != nil {
				return fmt.Errorf("%s: %w", *fluxFile, err)
			}
		}
		exprs = k.Spec.HealthCheckExprs
	}

	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	// Integers as int64, as the API machinery decodes them (encoding/json would give float64).
	var objects []any
	if err := utiljson.Unmarshal(input, &objects); err != nil {
		return fmt.Errorf("stdin: %w", err)
	}
	out := make([]result, 0, len(objects))
	for i, o := range objects {
		m, ok := o.(map[string]any)
		if !ok {
			return fmt.Errorf("stdin: item %d is not an object", i)
		}
		u := &unstructured.Unstructured{Object: m}
		res, err := status.Compute(u)
		if err != nil {
			return fmt.Errorf("kstatus of %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		r := result{KStatus: string(res.Status), Message: res.Message}
		for _, h := range exprs {
			if h.APIVersion == u.GetAPIVersion() && h.Kind == u.GetKind() {
				s, err := fluxStatus(h, u)
				r.Flux = s
				if err != nil {
					r.FluxError = err.Error()
				}
			}
		}
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
