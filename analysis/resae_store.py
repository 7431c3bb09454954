#!/usr/bin/env python3
"""Read resae's HDF5 outputs: the results file (results.h5) and the activation store (activations.h5).

usage (command line): /usr/bin/python3 analysis/resae_store.py RUN_DIR|results.h5
    prints the schema, the results layout and every table with its columns and enum names.

usage (library; analysis/report.py, analysis/store_info.py and tests/run/compare_results.py use it):
    import resae_store
    with resae_store.open_results("runs/demo") as r:      # a run directory or a results.h5 path
        sae = r.table("sae")                                # /sae/table
        sae.columns                                         # ['variant', 'layer', 'pred', 'k', ...]
        sae.col("fvu")                                      # one column, a float64 numpy array
        sae.names("variant")                                # ['raw', 'resae'], from the file
        sae.labels("variant")                               # the name of every row's variant
        ce = r.table("eval/ce")                             # r.eval_tables() lists /eval's tables
        clean = ce.col("mode") == ce.code("mode", "clean")
        r.config_yaml()                                     # the resolved config, as text
    with resae_store.open_activations("runs/demo") as st:   # a run directory or activations.h5
        st.identity()                                       # the attributes that identify the store

Results layouts (root attribute `results_layout`; absent = layout 1). Both have schema_version 1.
  2: every table dataset (/affine/table, /sae/table, the 2-D tables under /eval) carries `columns`,
     comma-separated plain column names, and for every enum-valued column C an attribute `enum:C`
     with the names in value order ("raw,resae").
  1: /affine and /sae carry `table_columns` on the group, /eval's tables `columns` on the dataset;
     enum columns are annotated in the name ("kind(0=raw;1=resae)"), the CE modes are listed in the
     /eval attribute `ce_modes` ("0=clean,1=single,..."), and /sae/table's first column is `kind`.
     The reader presents a layout-1 file like a layout-2 one: plain names, `variant` for `kind`.
The set column of the /eval tables is decoded with the /eval attribute `set_names` (both layouts)
unless the table has an `enum:set`. Column meanings: docs/store.md.

Every failure raises StoreError with a message naming the file and the missing object or attribute.
"""
import os
import re
import sys

import h5py
import numpy as np

# The schema versions this reader understands: RESAE_SCHEMA_VERSION in include/resae/version.h
# (tests/analysis/test_resae_store.py fails when the C side moves on without this reader).
SCHEMA_VERSIONS = (1,)
# results_layout values this reader understands (absent = 1).
RESULTS_LAYOUTS = (1, 2)
ACTIVATIONS_KIND = "resae-activations"
SPLITS = ("calib", "train", "eval")
# Root attributes of an activation store that record where its inputs were read from and which
# writer made it, not what it holds (docs/store.md "Layout"); every other root attribute is its
# identity, so an attribute the C side adds is compared without a change here.
PROVENANCE_ATTRS = ("resae_version", "model_path", "data_path")


_MISSING = object()


class StoreError(Exception):
    """A file is missing, of another schema, or lacks a dataset or attribute the reader needs."""


def text(v):
    """An HDF5 string attribute (fixed-length bytes or variable-length str) as str."""
    if isinstance(v, (bytes, np.bytes_)):
        return bytes(v).decode()
    if isinstance(v, np.ndarray) and v.shape == () and v.dtype.kind in "SOU":
        return text(v[()])
    return str(v)


def plain(v):
    """An attribute value as a Python scalar, list or str (for printing and JSON)."""
    if isinstance(v, (bytes, np.bytes_, str)):
        return text(v)
    return np.asarray(v).tolist()


def layer_name(layer):
    """Dataset name of a stored layer: L<l>, Lemb for the embedding output (-1)."""
    return "Lemb" if layer == -1 else "L%d" % layer


def _enum_pairs(spec, sep, where):
    """Parse "0=raw;1=resae" (sep ";") or "0=clean,1=single" (sep ",") into {value: name}, or None
    when spec is not such a list (a plain annotation)."""
    out = {}
    for part in spec.split(sep):
        m = re.fullmatch(r"\s*(-?\d+)\s*=\s*([^=]+?)\s*", part)
        if not m:
            return None
        v = int(m.group(1))
        if v in out:
            raise StoreError(f"{where}: value {v} is named twice in '{spec}'")
        out[v] = m.group(2)
    return out


class Table:
    """One results table: a (rows, columns) float64 array with named columns, some of them enums.

    columns: the plain column names, in order; array: the data; enums: {column: {value: name}}."""

    def __init__(self, file, path, columns, array, enums):
        self.file, self.path, self.columns, self.array, self.enums = file, path, columns, array, enums

    def __len__(self):
        return self.array.shape[0]

    def __repr__(self):
        return f"<Table {self.file}:/{self.path} {self.array.shape[0]} rows: {','.join(self.columns)}>"

    def _where(self):
        return f"{self.file}: /{self.path}"

    def has(self, column):
        return column in self.columns

    def index(self, column):
        """Position of a column."""
        try:
            return self.columns.index(column)
        except ValueError:
            raise StoreError(f"{self._where()} has no column '{column}' (columns: {','.join(self.columns)})") \
                from None

    def col(self, column):
        """One column (a view of the array)."""
        return self.array[:, self.index(column)]

    def dict(self):
        """{column: values} for every column."""
        return {c: self.array[:, i] for i, c in enumerate(self.columns)}

    def _enum(self, column):
        self.index(column)
        if column not in self.enums:
            raise StoreError(f"{self._where()}: column '{column}' has no enum names (attribute `enum:{column}`)")
        return self.enums[column]

    def names(self, column):
        """The names of an enum column's values, in value order."""
        e = self._enum(column)
        return [e[v] for v in sorted(e)]

    def name(self, column, value):
        """The name of one value of an enum column."""
        e = self._enum(column)
        v = int(value)
        if v != value or v not in e:
            raise StoreError(f"{self._where()}: column '{column}' holds {value}, which has no name "
                             f"(names: {', '.join(f'{k}={n}' for k, n in sorted(e.items()))})")
        return e[v]

    def code(self, column, name):
        """The value of a name of an enum column."""
        for v, n in self._enum(column).items():
            if n == name:
                return v
        raise StoreError(f"{self._where()}: column '{column}' has no value named '{name}' "
                         f"(names: {', '.join(self.names(column))})")

    def labels(self, column):
        """The name of every row's value of an enum column (a list of str)."""
        return [self.name(column, v) for v in self.col(column)]


class _File:
    """An HDF5 file open for reading whose root attributes _check() accepted; a context manager."""

    def __init__(self, path):
        self.path = path
        try:
            self.h5 = h5py.File(path, "r")
        except OSError as e:
            raise StoreError(f"{path}: cannot open as HDF5 ({e})") from None
        try:
            self._check()
        except BaseException:
            self.h5.close()
            raise

    def _check(self):
        raise NotImplementedError

    def close(self):
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Results(_File):
    """An open results.h5 (use open_results). h5: the h5py.File; layout, schema_version: ints."""

    def _check(self):
        a = self.h5.attrs
        if "kind" in a and text(a["kind"]) == ACTIVATIONS_KIND:
            raise StoreError(f"{self.path}: an activation store, not a results file (results.h5)")
        if "schema_version" not in a:
            raise StoreError(f"{self.path}: no root attribute `schema_version` (not a resae results file)")
        self.schema_version = int(a["schema_version"])
        if self.schema_version not in SCHEMA_VERSIONS:
            raise StoreError(f"{self.path}: schema version {self.schema_version}; this reader "
                             f"(analysis/resae_store.py) reads {', '.join(map(str, SCHEMA_VERSIONS))}")
        self.layout = int(a["results_layout"]) if "results_layout" in a else 1
        if self.layout not in RESULTS_LAYOUTS:
            raise StoreError(f"{self.path}: results_layout {self.layout}; this reader (analysis/resae_store.py) "
                             f"reads layouts {', '.join(map(str, RESULTS_LAYOUTS))}")

    # -- objects and attributes ------------------------------------------------------------------

    def has(self, path):
        return path.strip("/") in self.h5

    def _obj(self, path, what="object"):
        path = path.strip("/")
        if path not in self.h5:
            raise StoreError(f"{self.path}: no {what} /{path}")
        return self.h5[path]

    def attr(self, path, name, default=_MISSING):
        """Attribute `name` of the object at path ("" for the root), strings as str."""
        a = self._obj(path).attrs if path.strip("/") else self.h5.attrs
        if name not in a:
            if default is not _MISSING:
                return default
            raise StoreError(f"{self.path}: /{path.strip('/')} has no attribute `{name}`")
        v = a[name]
        return text(v) if isinstance(v, (bytes, np.bytes_, str)) else v

    @property
    def attrs(self):
        """The root attributes, strings as str."""
        return {k: self.attr("", k) for k in self.h5.attrs}

    def config_yaml(self):
        """The resolved config of the run that wrote the file (dataset /config_yaml)."""
        return text(self._obj("config_yaml", "dataset")[()])

    def datasets(self, groups=("affine", "sae", "eval")):
        """{path: h5py.Dataset} for every dataset below the given top-level groups."""
        out = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name.split("/")[0] in groups:
                out[name] = obj
        self.h5.visititems(visit)
        return out

    # -- tables ----------------------------------------------------------------------------------

    def _table_path(self, name):
        name = name.strip("/")
        if name in self.h5 and isinstance(self.h5[name], h5py.Group):
            name += "/table"
        if name not in self.h5:
            raise StoreError(f"{self.path}: no dataset /{name}")
        return name

    def _raw_columns(self, ds, path):
        """The column attribute's text and the object it was read from."""
        if "columns" in ds.attrs:
            return text(ds.attrs["columns"])
        parent = ds.parent
        if self.layout == 1 and path.endswith("/table") and "table_columns" in parent.attrs:
            return text(parent.attrs["table_columns"])
        where = f"/{path}" if self.layout == 2 else f"/{path} (and layout 1's `table_columns` on its group)"
        raise StoreError(f"{self.path}: no attribute `columns` on {where} (results layout {self.layout})")

    def is_table(self, path):
        """Whether the dataset at path is a table (2-D, with column names)."""
        path = path.strip("/")
        obj = self.h5.get(path)
        if not isinstance(obj, h5py.Dataset) or obj.ndim != 2:
            return False
        return "columns" in obj.attrs or (path.endswith("/table") and "table_columns" in obj.parent.attrs)

    def tables(self):
        """The paths of every table: affine/table, sae/table, eval/<name>."""
        return [p for p in self.datasets() if self.is_table(p)]

    def eval_tables(self):
        """The names of the tables under /eval (recon, redundancy, ce, ...), [] before evaluation."""
        if "eval" not in self.h5:
            return []
        return sorted(n for n in self.h5["eval"] if self.is_table("eval/" + n))

    def table(self, name):
        """The table "affine", "sae" (their /table) or at a path such as "eval/ce"."""
        path = self._table_path(name)
        ds = self.h5[path]
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 2:
            raise StoreError(f"{self.path}: /{path} is not a 2-D table")
        where = f"{self.path}: /{path}"
        columns, enums = [], {}
        for spec in self._raw_columns(ds, path).split(","):
            col = spec.strip()
            m = re.fullmatch(r"([^()]+)\((.*)\)", col)
            if m:
                # layout 1: "kind(0=raw;1=resae)" names the values in the column name
                col = m.group(1).strip()
                e = _enum_pairs(m.group(2), ";", where)
                if e is not None:
                    enums[col] = e
            columns.append(col)
        if self.layout == 1:
            self._layout1_names(path, columns, enums)
        for col in columns:
            key = "enum:" + col
            if key in ds.attrs:
                enums[col] = dict(enumerate(n.strip() for n in text(ds.attrs[key]).split(",")))
        if "set" in columns and "set" not in enums and path.startswith("eval/") and \
                "set_names" in self.h5["eval"].attrs:
            enums["set"] = dict(enumerate(text(self.h5["eval"].attrs["set_names"]).split(",")))
        if len(set(columns)) != len(columns):
            raise StoreError(f"{where}: repeated column names in {','.join(columns)}")
        array = ds[()]
        if array.shape[1] != len(columns):
            raise StoreError(f"{where} has {array.shape[1]} columns but its column attribute names "
                             f"{len(columns)}: {','.join(columns)}")
        return Table(self.path, path, columns, array, enums)

    def _layout1_names(self, path, columns, enums):
        """What layout 1 said outside the column names, or never stored."""
        # layout 1 called /sae/table's variant column `kind` (the same values, 0 raw and 1 resae);
        # the new name is known only to this reader
        if path == "sae/table" and columns and columns[0] == "kind":
            columns[0] = "variant"
            if "kind" in enums:
                enums["variant"] = enums.pop("kind")
        # layout 1 listed the CE modes on the /eval group ("0=clean,1=single,..."); that they are the
        # values of /eval/ce's `mode` column was only said in docs/store.md
        if path == "eval/ce" and "mode" in columns and "ce_modes" in self.h5["eval"].attrs:
            spec = text(self.h5["eval"].attrs["ce_modes"])
            e = _enum_pairs(spec, ",", f"{self.path}: /eval attribute `ce_modes`")
            if e is None:
                raise StoreError(f"{self.path}: /eval attribute `ce_modes` is not a list VALUE=NAME,...: '{spec}'")
            enums["mode"] = e


def _in_run_dir(path, name):
    """RUN_DIR -> RUN_DIR/name; a file (an existing one, or a name ending in .h5) stays."""
    if os.path.isfile(path) or (path.endswith(".h5") and not os.path.isdir(path)):
        return path
    return os.path.join(path, name)


def results_path(path):
    """RUN_DIR -> RUN_DIR/results.h5; a file path stays."""
    return _in_run_dir(path, "results.h5")


def open_results(path):
    """Open a run directory's results.h5 (or a results file) for reading; use it in a `with`."""
    p = results_path(path)
    if not os.path.exists(p):
        raise StoreError(f"{p} not found (has `resae run` finished a stage yet?)")
    return Results(p)


class Activations(_File):
    """An open activation store (use open_activations). h5: the h5py.File; schema_version: int."""

    def _check(self):
        a = self.h5.attrs
        if text(a.get("kind", b"")) != ACTIVATIONS_KIND:
            raise StoreError("%s: not a resae activation store" % self.path)
        if "schema_version" not in a:
            raise StoreError(f"{self.path}: no root attribute `schema_version`")
        self.schema_version = int(a["schema_version"])
        if self.schema_version not in SCHEMA_VERSIONS:
            raise StoreError("%s: schema version %d, this script reads %s" % (
                self.path, self.schema_version, ", ".join(map(str, SCHEMA_VERSIONS))))

    def identity(self):
        """{attribute: value} of the root attributes that determine the store's contents."""
        return {k: self.h5.attrs[k] for k in self.h5.attrs if k not in PROVENANCE_ATTRS}


def open_activations(path):
    """Open a run directory's activations.h5 (or a store file) for reading; use it in a `with`."""
    p = _in_run_dir(path, "activations.h5")
    if not os.path.exists(p):
        raise StoreError(f"{p} not found (has the harvest stage run?)")
    return Activations(p)


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) == 2 else 2
    try:
        with open_results(argv[1]) as r:
            print(f"{r.path}: schema {r.schema_version}, results layout {r.layout}")
            for p in r.tables():
                t = r.table(p)
                print(f"  /{p}: {len(t)} rows x {len(t.columns)} columns: {','.join(t.columns)}")
                for c, e in t.enums.items():
                    print(f"    {c}: " + ", ".join(f"{v}={n}" for v, n in sorted(e.items())))
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
