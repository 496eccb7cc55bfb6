package materialize

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// envHeader marks the file as generated; both readers skip lines that start
// with "#".
const envHeader = "# Written by warden-agent. Local changes are overwritten.\n"

// RenderEnv renders vars as an env file that `docker run --env-file` and a
// systemd unit's EnvironmentFile= both read to the same values: a comment
// header, then one KEY=VALUE line per variable, sorted by key.
//
// Values are written raw, never quoted, because docker's env-file parser takes
// everything after the first "=" literally: quotes would end up inside the
// value. systemd, on the other hand, strips leading and trailing whitespace,
// removes quotes around a value and interprets backslashes. A value is
// therefore only accepted if both read it unchanged: it must not contain a
// newline, carriage return, NUL or backslash, must not begin or end with a
// space or tab, and must not begin with a quote. Anything else is refused with
// an error naming the key (not the value: it may be a secret), because a
// silently altered WA_SECRET would break the app in ways hard to trace back.
// Keys must match [A-Z_][A-Z0-9_]*.
func RenderEnv(vars map[string]string) ([]byte, error) {
	keys := make([]string, 0, len(vars))
	for k, v := range vars {
		if err := checkEnvKey(k); err != nil {
			return nil, err
		}
		if err := checkEnvValue(v); err != nil {
			return nil, fmt.Errorf("env value of %s %w", k, err)
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b bytes.Buffer
	b.WriteString(envHeader)
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(vars[k])
		b.WriteByte('\n')
	}
	return b.Bytes(), nil
}

// ParseEnv reads an env file in the format RenderEnv writes: blank lines and
// lines starting with "#" are skipped, every other line must be KEY=VALUE with
// a valid key, and a key may appear only once.
func ParseEnv(data []byte) (map[string]string, error) {
	vars := make(map[string]string)
	for i, line := range strings.Split(string(data), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("env line %d: no \"=\"", i+1)
		}
		if err := checkEnvKey(k); err != nil {
			return nil, fmt.Errorf("env line %d: %w", i+1, err)
		}
		if err := checkEnvValue(v); err != nil {
			return nil, fmt.Errorf("env line %d: value of %s %w", i+1, k, err)
		}
		if _, dup := vars[k]; dup {
			return nil, fmt.Errorf("env line %d: %s set twice", i+1, k)
		}
		vars[k] = v
	}
	return vars, nil
}

func checkEnvKey(k string) error {
	if k == "" {
		return errors.New("empty env key")
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c == '_' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9' {
			continue
		}
		return fmt.Errorf("env key %q does not match [A-Z_][A-Z0-9_]*", k)
	}
	return nil
}

// checkEnvValue returns an error phrased to follow "env value of KEY".
func checkEnvValue(v string) error {
	if i := strings.IndexAny(v, "\n\r\x00\\"); i >= 0 {
		return fmt.Errorf("contains %q at byte %d, which systemd or docker would not read back unchanged", v[i], i)
	}
	if v == "" {
		return nil
	}
	if strings.ContainsRune(" \t", rune(v[0])) || strings.ContainsRune(" \t", rune(v[len(v)-1])) {
		return errors.New("begins or ends with whitespace, which systemd strips")
	}
	if v[0] == '"' || v[0] == '\'' {
		return errors.New("begins with a quote, which systemd removes")
	}
	return nil
}
