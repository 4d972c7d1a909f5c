// Package bootcontents publishes the network-boot contents of a release:
// the OS kernel and initrd, checked against their SHA-256, and the rendered
// ignition configs, into a content directory served to netbooting machines.
//
// The directory looks like this:
//
//	versions/<os-version>/kernel, initrd, ignitions/<role>.ign, manifest.json
//	current -> versions/<os-version>
//
// A version is written under a temporary name, synced, renamed into
// versions/, and only then made current by renaming a new symlink over
// current. A reader that follows current always finds a complete version.
package bootcontents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/ferry-cd/ferry/pkg/artifacts"
	"github.com/ferry-cd/ferry/pkg/release"
)

// DefaultKeep is how many versions are kept.
const DefaultKeep = 3

// Publisher publishes boot contents into Dir.
type Publisher struct {
	Dir string
	// IgnitionDir holds the ignition templates named by the artifact set.
	IgnitionDir string
	Client      *http.Client
	Keep        int
	Download    release.DownloadOptions
	Log         *slog.Logger
}

// Manifest records what a published version holds.
type Manifest struct {
	Channel   string            `json:"channel"`
	Version   string            `json:"version"`
	Kernel    string            `json:"kernel_sha256"`
	Initrd    string            `json:"initrd_sha256"`
	Ignitions map[string]string `json:"ignitions"`
}

// TemplateData is what an ignition template can use.
type TemplateData struct {
	Role      string
	OSVersion string
	Channel   string
	// BaseURL is where the current contents are served, relative paths
	// work too.
	Kernel, Initrd string
}

// Current returns the version that current points to, or "".
func (p *Publisher) Current() (string, error) {
	target, err := os.Readlink(filepath.Join(p.Dir, "current"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return filepath.Base(target), nil
}

// Publish makes the set's OS image and ignitions current. It returns
// changed=false, downloading nothing, when that version is current already.
func (p *Publisher) Publish(ctx context.Context, set *artifacts.Set) (changed bool, err error) {
	o := set.OSImage
	if o == nil {
		return false, errors.New("the artifact set has no osImage")
	}
	if strings.ContainsAny(o.Version, "/\\") || o.Version == "." || o.Version == ".." {
		return false, fmt.Errorf("osImage version %q cannot name a directory", o.Version)
	}
	versions := filepath.Join(p.Dir, "versions")
	final := filepath.Join(versions, o.Version)
	if cur, err := p.Current(); err != nil {
		return false, err
	} else if cur == o.Version && p.complete(final, o) {
		return false, nil
	}
	if err := os.MkdirAll(versions, 0o755); err != nil {
		return false, err
	}

	if !p.complete(final, o) {
		if err := p.build(ctx, set, versions, final); err != nil {
			return false, err
		}
	}
	if err := p.switchCurrent(o.Version); err != nil {
		return false, err
	}
	p.log().Info("boot contents published", "os_version", o.Version, "dir", p.Dir)
	if err := p.prune(o.Version); err != nil {
		p.log().Warn("cannot remove old boot contents", "error", err)
	}
	return true, nil
}

func (p *Publisher) log() *slog.Logger {
	if p.Log == nil {
		return slog.Default()
	}
	return p.Log
}

// complete reports whether a published version directory matches o.
func (p *Publisher) complete(dir string, o *artifacts.OSImage) bool {
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return false
	}
	var m Manifest
	return json.Unmarshal(data, &m) == nil && m.Version == o.Version && m.Kernel == o.Kernel.SHA256 && m.Initrd == o.Initrd.SHA256
}

func (p *Publisher) build(ctx context.Context, set *artifacts.Set, versions, final string) error {
	o := set.OSImage
	tmp, err := os.MkdirTemp(versions, ".tmp-"+o.Version+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // gone after the rename; cleans up on failure
	client := p.Client
	if client == nil {
		client = http.DefaultClient
	}
	for _, f := range []struct {
		name string
		file artifacts.File
	}{{"kernel", o.Kernel}, {"initrd", o.Initrd}} {
		dl := p.Download
		dl.MaxSize = f.file.Size
		if _, err := release.DownloadURL(ctx, client, f.file.URL, tmp, f.name, f.file.SHA256, dl); err != nil {
			return fmt.Errorf("osImage %s: %w", f.name, err)
		}
	}
	m := Manifest{Channel: o.Channel, Version: o.Version, Kernel: o.Kernel.SHA256, Initrd: o.Initrd.SHA256, Ignitions: map[string]string{}}
	if len(set.Ignitions) > 0 {
		if err := os.Mkdir(filepath.Join(tmp, "ignitions"), 0o755); err != nil {
			return err
		}
	}
	for _, ig := range set.Ignitions {
		out, err := p.render(ig, o)
		if err != nil {
			return err
		}
		name := "ignitions/" + ig.Role + ".ign"
		if err := writeSynced(filepath.Join(tmp, name), out); err != nil {
			return err
		}
		m.Ignitions[ig.Role] = name
	}
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := writeSynced(filepath.Join(tmp, "manifest.json"), data); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	// An incomplete leftover of an earlier attempt is replaced.
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return syncDir(versions)
}

func (p *Publisher) render(ig artifacts.Ignition, o *artifacts.OSImage) ([]byte, error) {
	src := filepath.Join(p.IgnitionDir, filepath.Clean("/"+ig.Source))
	text, err := os.ReadFile(src)
	if err != nil {
		return nil, fmt.Errorf("ignition %s: %w", ig.Role, err)
	}
	tmpl, err := template.New(ig.Source).Option("missingkey=error").Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("ignition %s: %w", ig.Role, err)
	}
	var b bytes.Buffer
	err = tmpl.Execute(&b, TemplateData{Role: ig.Role, OSVersion: o.Version, Channel: o.Channel, Kernel: "kernel", Initrd: "initrd"})
	if err != nil {
		return nil, fmt.Errorf("ignition %s: %w", ig.Role, err)
	}
	return b.Bytes(), nil
}

// switchCurrent points current at a version with one rename, which is
// atomic: a reader sees the old or the new target, never neither.
func (p *Publisher) switchCurrent(version string) error {
	link := filepath.Join(p.Dir, ".current-"+version)
	os.Remove(link)
	if err := os.Symlink(filepath.Join("versions", version), link); err != nil {
		return err
	}
	if err := os.Rename(link, filepath.Join(p.Dir, "current")); err != nil {
		os.Remove(link)
		return err
	}
	return syncDir(p.Dir)
}

// prune keeps the current version and the newest others, Keep in all.
func (p *Publisher) prune(current string) error {
	keep := p.Keep
	if keep <= 0 {
		keep = DefaultKeep
	}
	versions := filepath.Join(p.Dir, "versions")
	entries, err := os.ReadDir(versions)
	if err != nil {
		return err
	}
	type v struct {
		name string
		mod  int64
	}
	var others []v
	for _, e := range entries {
		if !e.IsDir() || e.Name() == current || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		others = append(others, v{e.Name(), info.ModTime().UnixNano()})
	}
	sort.Slice(others, func(i, j int) bool { return others[i].mod > others[j].mod })
	for i, o := range others {
		if i < keep-1 {
			continue
		}
		// Renamed out of the way first, in one step: a netboot server
		// that resolved the version finds it whole or not at all, never
		// half removed.
		gone := filepath.Join(versions, ".removing-"+o.name)
		if err := os.Rename(filepath.Join(versions, o.name), gone); err != nil {
			return err
		}
		if err := os.RemoveAll(gone); err != nil {
			return err
		}
		p.log().Info("removed old boot contents", "os_version", o.name)
	}
	// What a crash left half removed.
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".removing-") {
			os.RemoveAll(filepath.Join(versions, e.Name()))
		}
	}
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
