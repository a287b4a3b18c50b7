package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/callwake/callwake/push/pushtest"
)

// firstExtension is the first of the bench's extensions: 20000, 20001, ...
const firstExtension = 20000

// device is what one extension's phone app knows.
type device struct {
	password string
	token    string // APNs VoIP token, 64 hex
	instance string // +sip.instance, without quotes and brackets
}

func extensionName(i int) string { return strconv.Itoa(firstExtension + i) }

// deviceOf is the app of an extension of the bench; the same every run.
func deviceOf(ext string) device {
	n, _ := strconv.Atoi(ext)
	return device{
		password: "bench-pass-" + ext,
		token:    pushtest.DeviceToken(n),
		instance: fmt.Sprintf("urn:uuid:00000000-0000-4000-8000-%012d", n),
	}
}

// provision adds n extensions and one APNs device each, the way an admin
// and the app would: POST /api/v1/extensions with the admin token, then
// POST /api/v1/devices with the extension's own credentials.
func provision(ctx context.Context, cw *callwake, n, workers int) error {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	jobs := make(chan string)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for i := range n {
			select {
			case jobs <- extensionName(i):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range workers {
		g.Go(func() error {
			for ext := range jobs {
				d := deviceOf(ext)
				ext := map[string]string{"extension": ext, "password": d.password, "display_name": "Bench " + ext}
				if err := post(ctx, client, cw.httpURL+"/api/v1/extensions", ext, func(r *http.Request) {
					r.Header.Set("Authorization", "Bearer "+cw.adminToken)
				}, http.StatusCreated, http.StatusConflict); err != nil {
					return err
				}
				dev := map[string]string{"provider": "apns", "token": d.token, "topic": benchTopic, "instance": d.instance}
				if err := post(ctx, client, cw.httpURL+"/api/v1/devices", dev, func(r *http.Request) {
					r.SetBasicAuth(ext["extension"], d.password)
				}, http.StatusCreated, http.StatusOK); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

func post(ctx context.Context, client *http.Client, url string, body any, auth func(*http.Request), want ...int) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	auth(req)
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("POST %s: %w", url, err)
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(res.Body)
	for _, w := range want {
		if res.StatusCode == w {
			return nil
		}
	}
	return fmt.Errorf("POST %s: %d %s", url, res.StatusCode, strings.TrimSpace(string(answer)))
}

// writeExtensionsCSV writes SIPp's -inf file: the n extensions, in turn.
func writeExtensionsCSV(dir string, n int) (string, error) {
	var b strings.Builder
	b.WriteString("SEQUENTIAL\n")
	for i := range n {
		b.WriteString(extensionName(i))
		b.WriteString(";\n")
	}
	path := filepath.Join(dir, "extensions.csv")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}
