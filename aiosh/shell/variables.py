"""Shell variables as bash has them: scalars, indexed and associative arrays, `name[sub]` access, attributes.

Every read and write of a variable by name goes through here (expansion, arithmetic, `read`, `declare`,
`printf -v`, `${!ref}`), so `a[1]`, readonly and `declare -i` behave the same from all of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import arith
from .errors import ShellError
from .state import Array, Assoc, Indexed

if TYPE_CHECKING:
    from .state import ShellState

SUBSCRIPTED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\[(.*)\]", re.S)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def split_subscript(name: str) -> tuple[str, str | None]:
    """`a[1+2]` → (`a`, `1+2`); a plain name → (name, None)."""
    m = SUBSCRIPTED.fullmatch(name)
    if m:
        return m.group(1), m.group(2)
    return name, None


class Variables:
    """Variable access for one interpreter: its state, its functions' `local` scopes, and its `get_var` (which
    adds the dynamic variables, `$RANDOM` and the like, that arithmetic reads too)."""

    def __init__(self, state: ShellState, scopes: list[dict[str, tuple]],
                 get_var: Callable[[str], str | None]) -> None:
        self.state = state
        self.scopes = scopes  # the running functions' local scopes, innermost last
        self.get_var = get_var

    # -- reading -------------------------------------------------------------------------------------------------
    def arith_vars(self) -> arith.Vars:
        return arith.Vars(self.get_var, self.set_var, self.state.nounset)

    def array_index(self, arr: Array, sub: str, *, for_write: bool = False) -> int | str:
        """The key a subscript names: arithmetic for indexed arrays (negative counts from the end)."""
        if isinstance(arr, Assoc):
            if len(sub) >= 2 and sub[0] == sub[-1] and sub[0] in "'\"":
                return sub[1:-1]  # `A['k']` inside (( )): the subscript's quotes are removed
            return sub
        i = arith.evaluate(sub, self.arith_vars()) if sub.strip() else 0
        if i < 0:
            top = max(arr) + 1 if arr else 0
            if top + i < 0:
                if for_write:
                    raise ShellError(f"[{sub}]: bad array subscript")
                return -1
            i = top + i
        return i

    def lookup(self, name: str) -> str | None:
        """The value of `name` or `name[sub]` (an array's element 0 for a bare array name)."""
        base, sub = split_subscript(name)
        st = self.state
        arr = st.arrays.get(base)
        if sub is None:
            if arr is not None:
                return arr.get(0 if isinstance(arr, Indexed) else "0")
            return st.vars.get(name)
        if sub in ("@", "*"):
            values = self.array_values(base)
            if values is None:
                return None
            return " ".join(values)
        if arr is None:
            scalar = st.vars.get(base)
            if scalar is None:
                self.array_index(Indexed(), sub)  # still evaluate it: `${undef[1/0]}` is an error
                return None
            key = self.array_index(Indexed({0: scalar}), sub)
            return scalar if key == 0 else None
        return arr.get(self.array_index(arr, sub))

    def array_values(self, name: str) -> list[str] | None:
        """`${name[@]}`: an array's values, a scalar as one value, None when unset."""
        arr = self.state.arrays.get(name)
        if arr is not None:
            return arr.values_sorted()
        value = self.state.vars.get(name)
        return None if value is None else [value]

    def array_keys(self, name: str) -> list[str]:
        arr = self.state.arrays.get(name)
        if arr is not None:
            return arr.keys_sorted()
        return ["0"] if name in self.state.vars else []

    def attributes(self, name: str) -> str:
        """`${x@a}`: bash's attribute letters."""
        st = self.state
        arr = st.arrays.get(name)
        flags = "a" if isinstance(arr, Indexed) else "A" if isinstance(arr, Assoc) else ""
        for letter, group in (("i", st.integer), ("r", st.readonly), ("x", st.exported)):
            if name in group:
                flags += letter
        return flags

    def is_set(self, name: str) -> bool:
        return self.lookup(name) is not None

    # -- writing -------------------------------------------------------------------------------------------------
    def check_writable(self, base: str) -> None:
        if base in self.state.readonly:
            raise ShellError(f"{base}: readonly variable", abort=True)

    def _coerce(self, base: str, value: str) -> str:
        if base in self.state.integer:
            return str(arith.evaluate(value, self.arith_vars()) if value.strip() else 0)
        return value

    def assign(self, name: str, value: str, *, append: bool = False) -> None:
        """`name=value`, `name+=value`, `name[sub]=value` (a scalar becomes an array when subscripted)."""
        base, sub = split_subscript(name)
        if not NAME.fullmatch(base):
            raise ShellError(f"`{name}': not a valid identifier")
        self.check_writable(base)
        st = self.state
        if base == "PATH":
            st.hashed = None  # a new PATH forgets the remembered commands, as in bash
        arr = st.arrays.get(base)
        if sub is None:
            if arr is not None:
                key: int | str = 0 if isinstance(arr, Indexed) else "0"
                old = arr.get(key, "")
                arr[key] = self._append(base, old, value) if append else self._coerce(base, value)
            else:
                old = st.vars.get(base, "")
                st.vars[base] = self._append(base, old, value) if append else self._coerce(base, value)
            if st.allexport:
                st.exported.add(base)
            return
        if arr is None:
            arr = Indexed()
            if base in st.vars:
                arr[0] = st.vars.pop(base)
            st.arrays[base] = arr
        key = self.array_index(arr, sub, for_write=True)
        old = arr.get(key, "")
        arr[key] = self._append(base, old, value) if append else self._coerce(base, value)

    def _append(self, base: str, old: str, value: str) -> str:
        if base in self.state.integer:
            return str(arith.evaluate(f"({old or 0}) + ({value or 0})", self.arith_vars()))
        return old + value

    def assign_array(self, name: str, items: list[tuple[str | None, str]], *, append: bool = False,
                     assoc: bool | None = None) -> None:
        """`name=(v1 [k]=v2 …)`; items are (subscript or None, value)."""
        self.check_writable(name)
        st = self.state
        old = st.arrays.get(name)
        is_assoc = isinstance(old, Assoc) if assoc is None else assoc
        arr: Array = Assoc() if is_assoc else Indexed()
        if append:
            if old is not None:
                arr.update(old)
            elif name in st.vars:
                arr[0 if not is_assoc else "0"] = st.vars[name]
        st.vars.pop(name, None)
        st.arrays[name] = arr
        nxt = (max(arr) + 1 if arr else 0) if isinstance(arr, Indexed) else 0
        for sub, value in items:
            if isinstance(arr, Assoc):
                if sub is None:
                    raise ShellError(f"{name}: {value}: must use subscript when assigning associative array")
                arr[sub] = value
                continue
            if sub is not None:
                key = self.array_index(arr, sub, for_write=True)
                assert isinstance(key, int)
                nxt = key
            arr[nxt] = self._coerce(name, value)
            nxt += 1
        if st.allexport:
            st.exported.add(name)

    # the ExpandEnv / arithmetic interface
    def set_var(self, name: str, value: str) -> None:
        self.assign(name, value)

    def unset_var(self, name: str) -> None:
        """`unset name` / `unset 'a[1]'`; readonly ones refuse."""
        base, sub = split_subscript(name)
        st = self.state
        if base in st.readonly:
            raise ShellError(f"{base}: cannot unset: readonly variable")
        if sub is None:
            frames = self.scopes
            owner = next((k for k in range(len(frames) - 1, -1, -1) if base in frames[k]), None)
            if owner is not None and owner != len(frames) - 1:
                # local to a calling function (or a temporary binding of this call): bash's dynamic scope
                # unsets that one, and the value from further out shows again
                restore_local(st, base, frames[owner].pop(base))
                return
            st.vars.pop(base, None)
            st.arrays.pop(base, None)
            st.exported.discard(base)
            st.integer.discard(base)
            return
        arr = st.arrays.get(base)
        if arr is None:
            if base in st.vars and sub not in ("@", "*") and self.array_index(Indexed({0: ""}), sub) == 0:
                st.vars.pop(base, None)
            return
        if sub in ("@", "*"):
            st.arrays.pop(base, None)
            return
        if any(c in sub for c in "$\"'`\\"):  # `unset 'a["$k"]'`: the subscript is expanded first (bash)
            sub = self._expand_subscript(sub)
            if isinstance(arr, Assoc):
                arr.pop(sub, None)
                return
        key = self.array_index(arr, sub, for_write=True)
        arr.pop(key, None)

    def _expand_subscript(self, text: str) -> str:
        from .expand import expand_string
        from .lexer import Lexer, Source
        from .nodes import Word
        from .parser import _parse_subst, parse

        lexer = Lexer(Source(text), subparser=_parse_subst, parse_text=parse)
        return expand_string(self, Word(lexer._read_parts(frozenset(), "brace")))  # type: ignore[arg-type]


def save_local(st: ShellState, name: str) -> tuple:
    """What `local name` must put back when the function returns."""
    return (st.vars.get(name), st.arrays.get(name), name in st.exported, name in st.readonly, name in st.integer)


def restore_local(st: ShellState, name: str, old: tuple) -> None:
    scalar, arr, exported, readonly, integer = old
    st.vars.pop(name, None)
    st.arrays.pop(name, None)
    if scalar is not None:
        st.vars[name] = scalar
    if arr is not None:
        st.arrays[name] = arr
    for flag, group in ((exported, st.exported), (readonly, st.readonly), (integer, st.integer)):
        if flag:
            group.add(name)
        else:
            group.discard(name)
