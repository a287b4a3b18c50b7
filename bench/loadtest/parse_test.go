package loadtest

import (
	"strings"
	"testing"
	"time"
)

// These run in every `go test ./...`: the parsing the figures rest on.

func TestParseSIPpTimestamp(t *testing.T) {
	// SIPp 3.6's [timestamp]: local date, local time, Unix time.
	got, err := parseSIPpTimestamp("2026-11-21\t05:11:17.653731\t1795237877.653731")
	if err != nil || !got.Equal(time.Unix(1795237877, 653731000)) {
		t.Errorf("got %v, %v", got, err)
	}
	got, err = parseSIPpTimestamp("2026-11-21 05:11:17.05 1795237877.05")
	if err != nil || !got.Equal(time.Unix(1795237877, 50000000)) {
		t.Errorf("short fraction: got %v, %v", got, err)
	}
	for _, bad := range []string{"", "  ", "yesterday", "2026-11-21 x.y"} {
		if _, err := parseSIPpTimestamp(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestParseCallLog(t *testing.T) {
	at := parseCallLog("bench 7 invite 1795237896.000000 861828.000000 180 1795237896.000000 863410.000000 200 1795237897.000000 4616.000000")
	if d := at["180"].Sub(at["invite"]); d != 1582*time.Microsecond {
		t.Errorf("INVITE→180 = %v", d)
	}
	if d := at["200"].Sub(at["invite"]); d != 142788*time.Microsecond {
		t.Errorf("INVITE→200 = %v", d)
	}
	if parseCallLog("something else 1 2") != nil {
		t.Error("a foreign line parsed")
	}
}

func TestSummarise(t *testing.T) {
	var samples []time.Duration
	for i := 100; i >= 1; i-- {
		samples = append(samples, time.Duration(i)*time.Millisecond)
	}
	l := summarise(samples)
	if l.N != 100 || l.P50 != 50*time.Millisecond || l.P99 != 99*time.Millisecond || l.Max != 100*time.Millisecond {
		t.Errorf("got %+v", l)
	}
	if summarise(nil).String() != "-" {
		t.Error("no samples should read -")
	}
}

func TestReplaceFigures(t *testing.T) {
	readme := "# Speed\n\n## Push sending\n\nkept\n\n## Calls under load\n\nnot written yet.\n"
	once, err := replaceFigures(readme, "first")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(once, "## Push sending\n\nkept") || strings.Contains(once, "not written yet") ||
		!strings.Contains(once, figuresBegin+"\n\nfirst\n\n"+figuresEnd) {
		t.Errorf("first write:\n%s", once)
	}
	// Hand-written text around the markers stays.
	edited := strings.Replace(once, figuresEnd, figuresEnd+"\n\nWhat limits it: the writer.", 1)
	twice, err := replaceFigures(edited, "second")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(twice, "first") || !strings.Contains(twice, "second") || !strings.Contains(twice, "What limits it: the writer.") {
		t.Errorf("second write:\n%s", twice)
	}
}

func TestQueueGrowth(t *testing.T) {
	calls := func(latency func(i int) time.Duration) []callTiming {
		var out []callTiming
		for i := range 400 {
			out = append(out, callTiming{Invite: time.Unix(0, 0).Add(time.Duration(i) * time.Millisecond), To200: latency(i)})
		}
		return out
	}
	steady := calls(func(i int) time.Duration { return time.Duration(3+i%5) * time.Millisecond })
	if first, last, grew := queueGrowth(flows[2], steady); grew {
		t.Errorf("steady latency read as a growing queue: %s → %s", first, last)
	}
	growing := calls(func(i int) time.Duration { return time.Duration(i) * 10 * time.Millisecond })
	if _, _, grew := queueGrowth(flows[2], growing); !grew {
		t.Error("a latency rising through the step was not seen")
	}
}
