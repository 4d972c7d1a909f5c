package artifacts

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Embedded is the artifact set this binary was built with.
//
//go:embed artifacts.yaml
var Embedded []byte

// InstalledPath is where the package installs the artifact set.
const InstalledPath = "/usr/share/ferry/artifacts.yaml"

// Set is a release's artifact set: the exact version and digest of every
// component the boot servers run, and the plan that rolls them out.
type Set struct {
	Debs      []Deb      `yaml:"debs,omitempty" json:"debs,omitempty"`
	Images    []Image    `yaml:"images,omitempty" json:"images,omitempty"`
	OSImage   *OSImage   `yaml:"osImage,omitempty" json:"osImage,omitempty"`
	Ignitions []Ignition `yaml:"ignitions,omitempty" json:"ignitions,omitempty"`
	Plan      Plan       `yaml:"plan" json:"plan"`
}

// Deb is an extra Debian package, published as a GitHub release asset.
type Deb struct {
	// Name is the package name, as dpkg knows it.
	Name string `yaml:"name" json:"name"`
	// Repository is the GitHub owner/name that publishes it.
	Repository string `yaml:"repository" json:"repository"`
	// Release is the release tag; Asset the file in it.
	Release string `yaml:"release" json:"release"`
	Asset   string `yaml:"asset" json:"asset"`
	// AssetGlob picks the asset of a new release for generate-artifacts,
	// e.g. "*_amd64.deb".
	AssetGlob string `yaml:"assetGlob,omitempty" json:"assetGlob,omitempty"`
	// Version is the package version inside the .deb.
	Version string `yaml:"version" json:"version"`
	// Size and SHA256 are the asset's: the download stops at Size bytes.
	Size   int64  `yaml:"size" json:"size"`
	SHA256 string `yaml:"sha256" json:"sha256"`
}

// Image is a container image, pulled by digest.
type Image struct {
	Name       string `yaml:"name" json:"name"`
	Repository string `yaml:"repository" json:"repository"`
	Tag        string `yaml:"tag" json:"tag"`
	Digest     string `yaml:"digest" json:"digest"`
	// Units are the systemd units that run the image; they are restarted
	// when the image changes.
	Units []string `yaml:"units,omitempty" json:"units,omitempty"`
}

// Ref is the image's name with its tag, as the runtime lists it.
func (i *Image) Ref() string { return i.Repository + ":" + i.Tag }

// DigestRef pins the image by digest.
func (i *Image) DigestRef() string { return i.Repository + "@" + i.Digest }

// OSImage is the operating system that boot servers serve to netbooting
// machines.
type OSImage struct {
	Channel string `yaml:"channel" json:"channel"`
	// Feed is the channel's JSON listing, for generate-artifacts.
	Feed    string `yaml:"feed,omitempty" json:"feed,omitempty"`
	Version string `yaml:"version" json:"version"`
	Kernel  File   `yaml:"kernel" json:"kernel"`
	Initrd  File   `yaml:"initrd" json:"initrd"`
}

// File is a download with its checksum.
type File struct {
	URL string `yaml:"url" json:"url"`
	// Size and SHA256 are the file's: the download stops at Size bytes.
	Size   int64  `yaml:"size" json:"size"`
	SHA256 string `yaml:"sha256" json:"sha256"`
}

// Ignition is an ignition config template for one machine role.
type Ignition struct {
	// Source is the template's path in this repository; the package
	// installs it under /usr/share/ferry/.
	Source string `yaml:"source" json:"source"`
	Role   string `yaml:"role" json:"role"`
}

var (
	sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	digestPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	repoPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$`)
	unitPattern   = regexp.MustCompile(`^[A-Za-z0-9:_.@-]+\.(service|socket|timer|target|mount|path)$`)
)

// Parse reads an artifact set strictly: unknown fields, missing digests and
// plan steps that name unknown components are errors.
func Parse(data []byte) (*Set, error) {
	var s Set
	if err := decodeStrict(data, &s); err != nil {
		return nil, fmt.Errorf("artifact set: %w", err)
	}
	s.Plan.defaults()
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("artifact set: %w", err)
	}
	return &s, nil
}

// decodeStrict decodes YAML into v: a field v does not have is an error,
// and so is more than one document.
func decodeStrict(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// Load reads an artifact set file.
func Load(path string) (*Set, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read artifact set: %w", err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Validate checks every component and the plan against them.
func (s *Set) Validate() error {
	debs := map[string]bool{}
	for i, d := range s.Debs {
		where := fmt.Sprintf("debs[%d] (%s)", i, d.Name)
		switch {
		case !namePattern.MatchString(d.Name):
			return fmt.Errorf("%s: name must be a Debian package name", where)
		case debs[d.Name]:
			return fmt.Errorf("%s: listed twice", where)
		case !repoPattern.MatchString(d.Repository):
			return fmt.Errorf("%s: repository %q is not owner/name", where, d.Repository)
		case d.Release == "" || d.Asset == "" || d.Version == "":
			return fmt.Errorf("%s: release, asset and version are required (run ferry-ci generate-artifacts)", where)
		case !sha256Pattern.MatchString(d.SHA256):
			return fmt.Errorf("%s: sha256 %q is missing or not 64 hex digits", where, d.SHA256)
		case d.Size <= 0:
			return fmt.Errorf("%s: size (bytes) is missing: the download must stop at a size the set gives; run ferry-ci generate-artifacts, which writes it", where)
		}
		debs[d.Name] = true
	}
	images := map[string]bool{}
	for i, im := range s.Images {
		where := fmt.Sprintf("images[%d] (%s)", i, im.Name)
		switch {
		case !namePattern.MatchString(im.Name):
			return fmt.Errorf("%s: name must be lower-case letters, digits, '.', '_' or '-'", where)
		case images[im.Name]:
			return fmt.Errorf("%s: listed twice", where)
		case im.Repository == "" || im.Tag == "":
			return fmt.Errorf("%s: repository and tag are required", where)
		case !digestPattern.MatchString(im.Digest):
			return fmt.Errorf("%s: digest %q is missing or not sha256:<64 hex digits>", where, im.Digest)
		}
		for _, u := range im.Units {
			if !unitPattern.MatchString(u) {
				return fmt.Errorf("%s: %q is not a systemd unit name", where, u)
			}
		}
		images[im.Name] = true
	}
	if o := s.OSImage; o != nil {
		if o.Channel == "" || o.Version == "" {
			return errors.New("osImage: channel and version are required")
		}
		for name, f := range map[string]File{"kernel": o.Kernel, "initrd": o.Initrd} {
			if u, err := url.Parse(f.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
				return fmt.Errorf("osImage.%s: url %q is not an http(s) URL", name, f.URL)
			}
			if !sha256Pattern.MatchString(f.SHA256) {
				return fmt.Errorf("osImage.%s: sha256 %q is missing or not 64 hex digits", name, f.SHA256)
			}
			if f.Size <= 0 {
				return fmt.Errorf("osImage.%s: size (bytes) is missing: the download must stop at a size the set gives", name)
			}
		}
	}
	roles := map[string]bool{}
	for i, ig := range s.Ignitions {
		if ig.Source == "" || !namePattern.MatchString(ig.Role) {
			return fmt.Errorf("ignitions[%d]: source and a lower-case role are required", i)
		}
		if roles[ig.Role] {
			return fmt.Errorf("ignitions[%d]: role %s is listed twice", i, ig.Role)
		}
		roles[ig.Role] = true
	}
	if err := s.Plan.Validate(); err != nil {
		return err
	}
	for i := range s.Plan.Steps {
		st := &s.Plan.Steps[i]
		for j := range st.Actions {
			a := &st.Actions[j]
			where := fmt.Sprintf("plan: step %d (%s), action %d", i+1, st.Name, j+1)
			switch {
			case a.Debs != nil:
				for _, n := range a.Debs.Names {
					if !debs[n] {
						return fmt.Errorf("%s: debs names %q, which is not in debs", where, n)
					}
				}
			case a.Images != nil:
				for _, n := range a.Images.Names {
					if !images[n] {
						return fmt.Errorf("%s: images names %q, which is not in images", where, n)
					}
				}
			case a.BootContents != nil:
				if s.OSImage == nil {
					return fmt.Errorf("%s: boot-contents needs an osImage", where)
				}
				if st.Strategy != Leader {
					return fmt.Errorf("%s: boot-contents publishes for the whole fleet and must be in a leader step", where)
				}
			}
		}
	}
	return nil
}

// Marshal writes the set in its canonical form: components sorted by name,
// so that the same content always gives the same bytes.
func (s *Set) Marshal() ([]byte, error) {
	c := *s
	c.Debs = append([]Deb(nil), s.Debs...)
	c.Images = append([]Image(nil), s.Images...)
	c.Ignitions = append([]Ignition(nil), s.Ignitions...)
	sort.Slice(c.Debs, func(i, j int) bool { return c.Debs[i].Name < c.Debs[j].Name })
	sort.Slice(c.Images, func(i, j int) bool { return c.Images[i].Name < c.Images[j].Name })
	sort.Slice(c.Ignitions, func(i, j int) bool { return c.Ignitions[i].Role < c.Ignitions[j].Role })
	var b bytes.Buffer
	b.WriteString("# The artifact set of this ferry release; see docs/artifacts.md.\n# Versions and digests are written by `ferry-ci generate-artifacts`.\n")
	if err := writeYAML(&b, &c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeYAML writes v as the artifact set files are written: block style,
// indented by two.
func writeYAML(b *bytes.Buffer, v any) error {
	enc := yaml.NewEncoder(b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return enc.Close()
}

// Select returns the components named, or all when names is empty.
func selectNames[T any](all []T, names []string, name func(*T) string) []*T {
	var out []*T
	for i := range all {
		if len(names) == 0 || contains(names, name(&all[i])) {
			out = append(out, &all[i])
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// SelectDebs returns the debs named, or all.
func (s *Set) SelectDebs(names []string) []*Deb {
	return selectNames(s.Debs, names, func(d *Deb) string { return d.Name })
}

// SelectImages returns the images named, or all.
func (s *Set) SelectImages(names []string) []*Image {
	return selectNames(s.Images, names, func(i *Image) string { return i.Name })
}

// Summary is one line per component, for `ferry artifacts show` and diff.
func (s *Set) Summary() map[string]string {
	out := map[string]string{}
	for _, d := range s.Debs {
		out["deb/"+d.Name] = d.Version + " (" + d.Repository + " " + d.Release + ", sha256 " + d.SHA256[:12] + ")"
	}
	for _, im := range s.Images {
		out["image/"+im.Name] = im.Repository + ":" + im.Tag + " (" + im.Digest[:19] + ")"
	}
	if o := s.OSImage; o != nil {
		out["os/"+o.Channel] = o.Version
	}
	for _, ig := range s.Ignitions {
		out["ignition/"+ig.Role] = ig.Source
	}
	steps := make([]string, len(s.Plan.Steps))
	for i, st := range s.Plan.Steps {
		steps[i] = st.Name + ":" + st.Strategy
	}
	out["plan"] = strings.Join(steps, " ")
	return out
}

// Diff lists the components that differ between two sets, one line each:
// "+ name: detail" (added), "- name: detail" (removed), "~ name: a -> b".
func Diff(from, to *Set) []string {
	a, b := from.Summary(), to.Summary()
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	var out []string
	for _, k := range names {
		switch {
		case a[k] == b[k]:
		case a[k] == "":
			out = append(out, "+ "+k+": "+b[k])
		case b[k] == "":
			out = append(out, "- "+k+": "+a[k])
		default:
			out = append(out, "~ "+k+": "+a[k]+" -> "+b[k])
		}
	}
	return out
}
