package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"
)

// Output formats.
const (
	OutputTable = "table"
	OutputJSON  = "json"
	OutputYAML  = "yaml"
)

func validOutput(o string) error {
	switch o {
	case OutputTable, OutputJSON, OutputYAML:
		return nil
	}
	return fmt.Errorf("-o %q: want table, json or yaml", o)
}

// marshalJSON is protojson with proto field names, re-indented: protojson's own whitespace is
// deliberately unstable, and scripts (and golden files) want stable output.
func marshalJSON(m proto.Message) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return indentJSON(raw)
}

// marshalJSONLine is marshalJSON on one line, for streams (one object per line).
func marshalJSONLine(m proto.Message) ([]byte, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("compact json: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

func indentJSON(raw []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		return nil, fmt.Errorf("indent json: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// writeMessage prints m as JSON or YAML.
func writeMessage(w io.Writer, format string, m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	return writeJSONAs(w, format, b)
}

// writeJSONAs prints a JSON document as it is, or converted to YAML.
func writeJSONAs(w io.Writer, format string, b []byte) error {
	if format == OutputYAML {
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return fmt.Errorf("encode yaml: %w", err)
		}
		b = y
	}
	_, err := w.Write(b)
	return err
}

// table is an aligned-column writer.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
		// A tab or newline inside a cell would break the columns.
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(cells[i])
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// kv prints "Key:   value" lines, aligned.
type kv struct{ t *table }

func newKV(w io.Writer) *kv { return &kv{t: newTable(w)} }

func (k *kv) add(key, value string) { k.t.row(key+":", value) }

func (k *kv) flush() error { return k.t.flush() }

// fmtTime renders a timestamp as RFC 3339 (UTC, seconds) with its distance from now: "2025-03-01T10:00:00Z (in 23h)".
func fmtTime(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return "-"
	}
	t := ts.AsTime()
	return t.UTC().Format(time.RFC3339) + " (" + relative(t, now) + ")"
}

// fmtTimeShort is the relative part alone, for narrow columns.
func fmtTimeShort(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil || (ts.GetSeconds() == 0 && ts.GetNanos() == 0) {
		return "-"
	}
	return relative(ts.AsTime(), now)
}

func relative(t, now time.Time) string {
	d := t.Sub(now)
	switch {
	case d >= time.Second:
		return "in " + approxDuration(d)
	case d <= -time.Second:
		return approxDuration(-d) + " ago"
	default:
		return "now"
	}
}

// approxDuration keeps the one or two most significant units, the way kubectl shows ages.
func approxDuration(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	s := int64(d.Round(time.Second) / time.Second)
	m, h, days := s/60, s/3600, s/86400
	switch {
	case s < 120:
		return fmt.Sprintf("%ds", s)
	case m < 10:
		if s%60 == 0 {
			return fmt.Sprintf("%dm", m)
		}
		return fmt.Sprintf("%dm%ds", m, s%60)
	case h < 1:
		return fmt.Sprintf("%dm", m)
	case h < 8:
		if m%60 == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m%60)
	case h < 48:
		return fmt.Sprintf("%dh", h)
	case days < 8:
		if h%24 == 0 {
			return fmt.Sprintf("%dd", days)
		}
		return fmt.Sprintf("%dd%dh", days, h%24)
	case days < 730:
		return fmt.Sprintf("%dd", days)
	default:
		return fmt.Sprintf("%dy", (days+182)/365)
	}
}

// fmtDuration renders an exact duration compactly: 720h → "30d", 90m → "1h30m", 1.5s → "1.5s".
func fmtDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	if d < time.Second {
		return sign + d.String()
	}
	var b strings.Builder
	b.WriteString(sign)
	units := []struct {
		suffix string
		size   time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}}
	for _, u := range units {
		if n := d / u.size; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.suffix)
			d -= n * u.size
		}
	}
	if d > 0 {
		secs := float64(d) / float64(time.Second)
		fmt.Fprintf(&b, "%ss", strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", secs), "0"), "."))
	}
	return b.String()
}

func fmtPBDuration(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	return fmtDuration(d.AsDuration())
}

// fmtSkew shows a signed skew: "+1.2s", "-300ms".
func fmtSkew(d *durationpb.Duration) string {
	if d == nil {
		return "-"
	}
	v := d.AsDuration()
	if v >= 0 {
		return "+" + fmtDuration(v)
	}
	return fmtDuration(v)
}

// enumName strips the enum's type prefix and lowercases it: NODE_ROLE_WEBAPP → "webapp".
func enumName(full, prefix string) string {
	if full == "" {
		return "-"
	}
	s := strings.TrimPrefix(full, prefix)
	if s == "UNSPECIFIED" {
		return "-"
	}
	return strings.ReplaceAll(strings.ToLower(s), "_", "-")
}

// parseEnum maps a CLI word ("webapp", "key-compromise") to the enum value named prefix+WORD.
func parseEnum(word, prefix, what string, values map[string]int32) (int32, error) {
	key := prefix + strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(word), "-", "_"))
	if v, ok := values[key]; ok && v != 0 {
		return v, nil
	}
	var valid []string
	for name, v := range values {
		if v != 0 {
			valid = append(valid, strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", "-"))
		}
	}
	slices.Sort(valid)
	return 0, fmt.Errorf("unknown %s %q (want one of %s)", what, word, strings.Join(valid, ", "))
}

func joinOr(list []string, empty string) string {
	if len(list) == 0 {
		return empty
	}
	return strings.Join(list, ",")
}

func shortID(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}
