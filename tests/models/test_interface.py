"""DecoderCache: beam search's reorder moves each survivor's keys and values with it."""

import torch

from seqlab.models.interface import DecoderCache


def test_beam_reorder_of_a_cache_with_room_reuses_the_previous_buffers():
    """DecoderCache.index_select gathers each survivor's K, V; a cache with room is gathered into
    the buffers the previous reorder left (no fresh tensors per beam step)."""
    torch.manual_seed(0)
    keys, values = torch.randn(6, 2, 16, 4), torch.randn(6, 2, 16, 4)  # room for 16, 5 filled
    cache = DecoderCache(position=5, self_kv=[(keys.clone(), values.clone())])
    first_buffer = cache.self_kv[0][0].data_ptr()
    rows = torch.tensor([1, 1, 0, 5, 3, 2])
    once = cache.index_select(rows)
    torch.testing.assert_close(once.self_kv[0][0][:, :, :5], keys[rows, :, :5])
    torch.testing.assert_close(once.self_kv[0][1][:, :, :5], values[rows, :, :5])
    twice = once.index_select(rows)
    torch.testing.assert_close(twice.self_kv[0][0][:, :, :5], keys[rows][rows, :, :5])
    assert twice.self_kv[0][0].data_ptr() == first_buffer  # written into the first cache's buffer
    exact = DecoderCache(position=5, self_kv=[(keys[:, :, :5].contiguous(), values[:, :, :5].contiguous())])
    moved = exact.index_select(rows)  # a cache of exactly the filled size: one position of room
    assert moved.self_kv[0][0].size(2) == 6
    torch.testing.assert_close(moved.self_kv[0][0][:, :, :5], keys[rows, :, :5])
