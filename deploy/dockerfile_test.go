package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// dockerfile is the little of a Dockerfile these tests need.
type dockerfile struct {
	path   string
	stages []stage
	builds []goBuild // every `cd DIR && ... go build ... -o OUT PKG` in any RUN
}

type stage struct {
	image, name string
	user        string
	entrypoint  []string
	copies      []copyInstr
}

type copyInstr struct {
	from  string // --from stage, "" for the build context
	srcs  []string
	dest  string
	flags []string
}

type goBuild struct {
	dir string // module directory, relative to the repository root
	out string // -o
	pkg string // package built, relative to dir
}

func (d dockerfile) final() stage { return d.stages[len(d.stages)-1] }

// instructions returns the Dockerfile's instructions with continuation
// lines joined and comments dropped.
func instructions(t *testing.T, path string) [][2]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][2]string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if rest, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(rest + " ")
			continue
		}
		cur.WriteString(line)
		kw, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		out = append(out, [2]string{strings.ToUpper(kw), strings.TrimSpace(args)})
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur.Len() > 0 {
		t.Fatalf("%s: ends inside a continued line", path)
	}
	return out
}

// words splits a shell command line on blanks, honouring quotes.
func words(s string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	in := false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

func parseDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	d := dockerfile{path: path}
	for _, in := range instructions(t, path) {
		kw, args := in[0], in[1]
		if kw == "FROM" {
			w := words(args)
			for len(w) > 0 && strings.HasPrefix(w[0], "--") { // --platform=
				w = w[1:]
			}
			if len(w) == 0 {
				t.Fatalf("%s: FROM without an image", path)
			}
			st := stage{image: w[0]}
			if len(w) == 3 && strings.EqualFold(w[1], "AS") {
				st.name = w[2]
			}
			d.stages = append(d.stages, st)
			continue
		}
		if len(d.stages) == 0 {
			if kw != "ARG" {
				t.Fatalf("%s: %s before the first FROM", path, kw)
			}
			continue
		}
		st := &d.stages[len(d.stages)-1]
		switch kw {
		case "USER":
			st.user = args
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(args), &st.entrypoint); err != nil {
				t.Errorf("%s: ENTRYPOINT %s: want the exec (JSON) form: %v", path, args, err)
			}
		case "COPY":
			var c copyInstr
			w := words(args)
			for len(w) > 0 && strings.HasPrefix(w[0], "--") {
				if from, ok := strings.CutPrefix(w[0], "--from="); ok {
					c.from = from
				}
				c.flags = append(c.flags, w[0])
				w = w[1:]
			}
			if len(w) < 2 {
				t.Fatalf("%s: COPY %s: want sources and a destination", path, args)
			}
			c.srcs, c.dest = w[:len(w)-1], w[len(w)-1]
			st.copies = append(st.copies, c)
		case "RUN":
			d.builds = append(d.builds, goBuilds(args)...)
		}
	}
	return d
}

// goBuilds finds `go build` commands in a RUN line and the directory each
// runs in (the last `cd` before it).
func goBuilds(run string) []goBuild {
	var out []goBuild
	dir := "."
	for seg := range strings.SplitSeq(run, "&&") {
		w := words(seg)
		for len(w) > 0 && strings.HasPrefix(w[0], "--") { // RUN --mount=...
			w = w[1:]
		}
		for len(w) > 0 && strings.Contains(w[0], "=") { // VAR=value go build
			w = w[1:]
		}
		switch {
		case len(w) == 2 && w[0] == "cd":
			dir = path.Join(dir, w[1]) // each RUN starts at WORKDIR, the repository root
		case len(w) >= 2 && w[0] == "go" && w[1] == "build":
			b := goBuild{dir: dir, pkg: "."}
			args := w[2:]
			for i := 0; i < len(args); i++ {
				a := args[i]
				switch {
				case a == "-o" && i+1 < len(args):
					b.out = args[i+1]
					i++
				case strings.HasPrefix(a, "-o="):
					b.out = strings.TrimPrefix(a, "-o=")
				case !strings.HasPrefix(a, "-"):
					b.pkg = a
				}
			}
			out = append(out, b)
		}
	}
	return out
}

func dockerfiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no *.Dockerfile in deploy/")
	}
	return files
}

func TestDockerfiles(t *testing.T) {
	root := repoRoot(t)
	for _, file := range dockerfiles(t) {
		t.Run(file, func(t *testing.T) {
			d := parseDockerfile(t, file)
			if len(d.stages) < 2 {
				t.Fatalf("%d FROM lines, want a build stage and a runtime stage", len(d.stages))
			}
			for _, st := range d.stages {
				if !pinned(st.image) {
					t.Errorf("FROM %s: pin a tag", st.image)
				}
			}
			if b := d.stages[0].image; !strings.HasPrefix(b, "golang:") {
				t.Errorf("build stage FROM %s, want golang:", b)
			}
			final := d.final()
			if !strings.HasPrefix(final.image, "gcr.io/distroless/") {
				t.Errorf("runtime stage FROM %s, want distroless", final.image)
			}
			user, _, _ := strings.Cut(final.user, ":")
			if user == "" || user == "root" || user == "0" {
				t.Errorf("final stage USER %q, want a non-root user", final.user)
			}
			if len(final.entrypoint) == 0 {
				t.Fatal("final stage has no ENTRYPOINT")
			}
			if !slices.Contains(final.files(d), final.entrypoint[0]) {
				t.Errorf("ENTRYPOINT %s is not copied into the final stage (copies %v)", final.entrypoint[0], final.files(d))
			}
			if len(d.builds) == 0 {
				t.Fatal("no `go build` in any RUN")
			}
			for _, b := range d.builds {
				checkBuild(t, root, b)
			}
		})
	}
}

// files lists the paths the stage copies from earlier stages that a
// `go build -o` of this Dockerfile produced.
func (st stage) files(d dockerfile) []string {
	outs := map[string]bool{}
	for _, b := range d.builds {
		outs[b.out] = true
	}
	var files []string
	for _, c := range st.copies {
		if c.from == "" {
			continue
		}
		for _, src := range c.srcs {
			if !outs[src] {
				continue
			}
			dest := c.dest
			if strings.HasSuffix(dest, "/") || len(c.srcs) > 1 {
				dest = filepath.Join(dest, filepath.Base(src))
			}
			files = append(files, dest)
		}
	}
	return files
}

// checkBuild asserts that a `go build` in a Dockerfile can work with the
// repository root as its context and GOWORK=off: the module and the main
// package exist, and every local replace stays inside the repository.
func checkBuild(t *testing.T, root string, b goBuild) {
	t.Helper()
	if b.out == "" {
		t.Errorf("go build in %s: no -o", b.dir)
	}
	modDir := filepath.Join(root, filepath.FromSlash(b.dir))
	gomod, err := os.ReadFile(filepath.Join(modDir, "go.mod"))
	if err != nil {
		t.Errorf("go build in %s: %v", b.dir, err)
		return
	}
	pkgDir := filepath.Join(modDir, filepath.FromSlash(b.pkg))
	if !isMainPackage(t, pkgDir) {
		t.Errorf("go build %s in %s: %s holds no non-test `package main` .go file", b.pkg, b.dir, pkgDir)
	}
	for mod, target := range localReplaces(string(gomod)) {
		abs := filepath.Join(modDir, filepath.FromSlash(target))
		rel, err := filepath.Rel(root, abs)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			t.Errorf("%s/go.mod: replace %s => %s leaves the repository (the build context)", b.dir, mod, target)
			continue
		}
		if _, err := os.Stat(filepath.Join(abs, "go.mod")); err != nil {
			t.Errorf("%s/go.mod: replace %s => %s: %v", b.dir, mod, target, err)
		}
	}
}

func isMainPackage(t *testing.T, dir string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			if strings.TrimSpace(line) == "package main" {
				return true
			}
		}
	}
	return false
}

// localReplaces returns go.mod's replace directives whose target is a
// directory (module path → relative path).
func localReplaces(gomod string) map[string]string {
	out := map[string]string{}
	inBlock := false
	for line := range strings.Lines(gomod) {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case inBlock && f[0] == ")":
			inBlock = false
			continue
		case f[0] == "replace" && len(f) == 2 && f[1] == "(":
			inBlock = true
			continue
		case f[0] == "replace":
			f = f[1:]
		case !inBlock:
			continue
		}
		i := slices.Index(f, "=>")
		if i < 1 || i+1 >= len(f) {
			continue
		}
		if target := f[i+1]; strings.HasPrefix(target, "./") || strings.HasPrefix(target, "../") {
			out[f[0]] = target
		}
	}
	return out
}

func TestGoBuilds(t *testing.T) {
	got := goBuilds(`--mount=type=cache,target=/go/pkg/mod cd services/ingest && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/ingest ./cmd/ingest && cd ../../deploy && go build -o=/out/hc`)
	want := []goBuild{
		{dir: "services/ingest", out: "/out/ingest", pkg: "./cmd/ingest"},
		{dir: "deploy", out: "/out/hc", pkg: "."},
	}
	if !slices.Equal(got, want) {
		t.Errorf("goBuilds = %+v, want %+v", got, want)
	}
}

func TestLocalReplaces(t *testing.T) {
	got := localReplaces(`module x

replace github.com/a/b => ../../b // pkg

replace (
	github.com/c/d => ./d
	github.com/e/f v1.0.0 => github.com/g/f v1.0.1
)
`)
	if len(got) != 2 || got["github.com/a/b"] != "../../b" || got["github.com/c/d"] != "./d" {
		t.Errorf("localReplaces = %v", got)
	}
}
