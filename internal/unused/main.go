// Command unused lists the exported functions and methods of ferry's
// packages that nothing but tests calls, and fails when there is one: an
// exported API with no caller is dead code, or belongs in a test file.
//
// A method that satisfies an interface is taken as called through it, and
// so are Unwrap, Is and As, which package errors calls.
// Packages that exist for tests (internal/*test, internal/githubfake,
// dctest) are not checked.
package main

import (
	"fmt"
	"go/types"
	"os"
	"sort"
	"strings"

	"golang.org/x/tools/go/packages"
)

func main() {
	unused, err := find(".")
	if err != nil {
		fmt.Fprintln(os.Stderr, "unused:", err)
		os.Exit(2)
	}
	for _, u := range unused {
		fmt.Println(u)
	}
	if len(unused) > 0 {
		fmt.Fprintf(os.Stderr, "unused: %d exported functions have no caller outside tests; remove them or move them into a test file\n", len(unused))
		os.Exit(1)
	}
}

// forTests are the packages that exist for tests.
func forTests(path string) bool {
	return strings.Contains(path, "/dctest") || strings.HasSuffix(path, "test") || strings.HasSuffix(path, "/githubfake")
}

func find(dir string) ([]string, error) {
	cfg := &packages.Config{Mode: packages.NeedName | packages.NeedTypes | packages.NeedTypesInfo | packages.NeedImports, Dir: dir}
	pkgs, err := packages.Load(cfg, "./...")
	if err != nil {
		return nil, err
	}
	if packages.PrintErrors(pkgs) > 0 {
		return nil, fmt.Errorf("the packages do not load")
	}
	used := map[types.Object]bool{}
	defined := map[*types.Func]string{}
	for _, p := range pkgs {
		for _, obj := range p.TypesInfo.Uses {
			used[obj] = true
			if f, ok := obj.(*types.Func); ok {
				used[f.Origin()] = true
			}
		}
		if forTests(p.PkgPath) || p.Name == "main" {
			continue
		}
		for id, obj := range p.TypesInfo.Defs {
			if f, ok := obj.(*types.Func); ok && id.IsExported() {
				defined[f] = p.Fset.Position(id.Pos()).String()
			}
		}
	}
	ifaces := interfaces(pkgs)
	var out []string
	for f, pos := range defined {
		if used[f] || satisfies(f, ifaces) {
			continue
		}
		out = append(out, pos+"\t"+f.FullName())
	}
	sort.Strings(out)
	return out, nil
}

// interfaces are the interfaces with methods in the build, standard
// library included, and those written in place (errors.As(err,
// &interface{ Transient() bool })).
func interfaces(pkgs []*packages.Package) []*types.Interface {
	out := []*types.Interface{types.Universe.Lookup("error").Type().Underlying().(*types.Interface)}
	for _, p := range pkgs {
		for _, tv := range p.TypesInfo.Types {
			if it, ok := tv.Type.Underlying().(*types.Interface); ok && it.NumMethods() > 0 {
				out = append(out, it)
			}
			if ptr, ok := tv.Type.(*types.Pointer); ok {
				if it, ok := ptr.Elem().Underlying().(*types.Interface); ok && it.NumMethods() > 0 {
					out = append(out, it)
				}
			}
		}
	}
	seen := map[*types.Package]bool{}
	var walk func(*types.Package)
	walk = func(tp *types.Package) {
		if seen[tp] {
			return
		}
		seen[tp] = true
		for _, name := range tp.Scope().Names() {
			if tn, ok := tp.Scope().Lookup(name).(*types.TypeName); ok {
				if it, ok := tn.Type().Underlying().(*types.Interface); ok && it.NumMethods() > 0 {
					out = append(out, it)
				}
			}
		}
		for _, imp := range tp.Imports() {
			walk(imp)
		}
	}
	for _, p := range pkgs {
		walk(p.Types)
	}
	return out
}

// satisfies reports whether f is a method by which its type satisfies an
// interface that has a method of that name.
func satisfies(f *types.Func, ifaces []*types.Interface) bool {
	recv := f.Type().(*types.Signature).Recv()
	if recv == nil {
		return false
	}
	switch f.Name() {
	case "Unwrap", "Is", "As":
		return true // package errors calls them through interfaces of its own
	}
	t := recv.Type()
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	for _, it := range ifaces {
		for i := 0; i < it.NumMethods(); i++ {
			if it.Method(i).Name() == f.Name() && (types.Implements(t, it) || types.Implements(types.NewPointer(t), it)) {
				return true
			}
		}
	}
	return false
}
