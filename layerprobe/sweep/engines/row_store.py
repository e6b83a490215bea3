"""The fast engine's keys and values beside the shared prefix: what a decoder layer's attention
sees as its cache when rows have no keys of their own yet (``NewKeysValues``, the suffix pass),
and each decoded row's own keys and values per layer (``RowStore``, read and written in place
through ``RowCache`` while decoding).

    store = RowStore.for_rows(kv, n=4, P=prefix_len, max_new_tokens=8)   # kv: per layer (keys, values)
    store.write_suffix(j, slice(B, 4 * B), *own.new)
    call_decoder_layer(layer, x, ..., cache=store.cache(j, rows))
"""

from __future__ import annotations


class NewKeysValues:
    """A decoder layer's cache during the suffix pass: it keeps the layer's new keys/values and
    hands them back unchanged (the shared prefix reaches the attention through the engine)."""

    new = None

    def update(self, key, value, layer_idx, *args, **kwargs):
        self.new = (key, value)
        return key, value

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class RowStore:
    """Per decoder layer, each decoded row's own keys/values (its suffix, then its generated
    tokens) in one buffer sized for the whole answer, written in place: no per-step copies.
    Rows are variant-major blocks of B samples; block 0 is the baseline."""

    def __init__(self, keys: list, values: list, length: int):
        self.keys, self.values = keys, values
        self.length = [length] * len(keys)

    @classmethod
    def for_rows(cls, kv: list, n: int, P: int, max_new_tokens: int) -> "RowStore":
        """Every block starts as the baseline's suffix, from ``kv`` (per layer, the baseline's
        (keys, values)): a variant's keys below its first knocked-out layer are the baseline's
        (the suffix pass overwrites the rest)."""
        keys, values = [], []
        for layer_kv in kv:
            for src, out in zip(layer_kv, (keys, values)):
                b, h, t, d = src.shape
                buf = src.new_empty(n, b, h, t - P + max_new_tokens - 1, d)
                buf[:, :, :, :t - P] = src[None, :, :, P:]
                out.append(buf.view(n * b, h, -1, d))
        return cls(keys, values, keys[0].shape[2] - max_new_tokens + 1 if keys else 0)

    def write_suffix(self, j: int, rows: slice, key, value) -> None:
        self.keys[j][rows, :, :key.shape[2]] = key
        self.values[j][rows, :, :value.shape[2]] = value

    def cache(self, j: int, rows) -> "RowCache":
        return RowCache(self, j, rows)

    def copy_baseline(self, j: int, rows, batch: int) -> None:
        """The last written position of ``rows`` (a slice of whole blocks, or row indices; not
        computed at layer ``j``) from the baseline's row of the same sample: equal while their
        tokens are the baseline's."""
        t = self.length[j] - 1
        for buf in (self.keys[j], self.values[j]):
            if isinstance(rows, slice):
                block = buf[rows, :, t]
                block.view(-1, batch, *block.shape[1:]).copy_(buf[:batch, :, t][None])
            else:
                buf[rows, :, t] = buf[rows % batch, :, t]


class RowCache:
    """A decoder layer's cache during decoding: the new token's key/value goes into the store at
    the next position of ``rows`` (a slice: views, no copies; or row indices), and the layer sees
    the rows' keys so far."""

    def __init__(self, store: RowStore, j: int, rows):
        self.store, self.j, self.rows = store, j, rows

    def update(self, key, value, layer_idx, *args, **kwargs):
        store, j, rows = self.store, self.j, self.rows
        t = store.length[j]
        store.length[j] += 1
        keys, values = store.keys[j], store.values[j]
        keys[rows, :, t:t + 1] = key
        values[rows, :, t:t + 1] = value
        return keys[rows, :, :t + 1], values[rows, :, :t + 1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0
