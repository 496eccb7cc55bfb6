// Package cliconfig layers a command's configuration: flag defaults → config file → PREFIX_* environment
// variables → command-line flags, each overriding the one before. Every setting is a flag; the file's keys
// and the environment's names are derived from the flag names (listen-addr → listen-addr: in YAML,
// WARDEN_LISTEN_ADDR in the environment), so the three cannot drift apart. Unknown file keys are refused.
package cliconfig

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Source says where the effective value of a setting came from.
type Source string

// Sources, lowest precedence first.
const (
	FromDefault Source = "default"
	FromFile    Source = "file"
	FromEnv     Source = "env"
	FromFlag    Source = "flag"
)

// EnvName is the environment variable for a flag.
func EnvName(prefix, flagName string) string {
	return prefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Load parses args into fs, applying the config file named by the flag fileFlag (if fs has it and it is
// set, on the command line or in the environment) and the environment. lookupEnv is os.LookupEnv in
// production. It returns where each setting came from.
func Load(fs *flag.FlagSet, args []string, prefix, fileFlag string, lookupEnv func(string) (string, bool)) (map[string]Source, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	sources := map[string]Source{}
	fs.VisitAll(func(f *flag.Flag) { sources[f.Name] = FromDefault })
	fs.Visit(func(f *flag.Flag) { sources[f.Name] = FromFlag })

	if fileFlag != "" && fs.Lookup(fileFlag) != nil {
		path := fs.Lookup(fileFlag).Value.String()
		if sources[fileFlag] != FromFlag {
			if v, ok := lookupEnv(EnvName(prefix, fileFlag)); ok {
				path = v
			}
		}
		if path != "" {
			if err := applyFile(fs, path, sources); err != nil {
				return nil, err
			}
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || sources[f.Name] == FromFlag || f.Name == fileFlag {
			return
		}
		name := EnvName(prefix, f.Name)
		if v, ok := lookupEnv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("environment %s: %w", name, e)
				return
			}
			sources[f.Name] = FromEnv
		}
	})
	return sources, err
}

func applyFile(fs *flag.FlagSet, path string, sources map[string]Source) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil {
			return fmt.Errorf("config file %s: unknown key %q", path, k)
		}
		if sources[k] == FromFlag {
			continue
		}
		if err := fs.Set(k, scalar(doc[k])); err != nil {
			return fmt.Errorf("config file %s: key %s: %w", path, k, err)
		}
		sources[k] = FromFile
	}
	return nil
}

// scalar renders a YAML value as the flag's text form; lists become comma-separated.
func scalar(v any) string {
	switch t := v.(type) {
	case []any:
		parts := make([]string, len(t))
		for i, e := range t {
			parts[i] = scalar(e)
		}
		return strings.Join(parts, ",")
	case nil:
		return ""
	case float64:
		if t == float64(int64(t)) {
			return fmt.Sprintf("%d", int64(t))
		}
		return fmt.Sprint(t)
	default:
		return fmt.Sprint(t)
	}
}

// List is a comma-separated flag value.
type List []string

func (l *List) String() string { return strings.Join(*l, ",") }

// Set replaces the list (a later layer replaces, it does not append).
func (l *List) Set(s string) error {
	*l = nil
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}

// Redacted lists the effective settings for the start-up log, hiding values of flags named in secret.
func Redacted(fs *flag.FlagSet, sources map[string]Source, secret ...string) []any {
	hide := map[string]bool{}
	for _, s := range secret {
		hide[s] = true
	}
	var out []any
	fs.VisitAll(func(f *flag.Flag) {
		v := f.Value.String()
		if hide[f.Name] && v != "" {
			v = "[redacted]"
		}
		out = append(out, f.Name, v+" ("+string(sources[f.Name])+")")
	})
	return out
}
