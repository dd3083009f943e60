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


def _read_through_rows(cache: DecoderCache) -> torch.Tensor:
    """Each row's cached keys (N, H, position, d_k), read where ``kv_rows`` says they lie."""
    keys, positions = cache.self_kv[0][0], torch.arange(cache.position)
    return keys[cache.kv_rows, :, positions].transpose(1, 2)


def test_reorder_in_place_records_where_each_survivors_keys_lie():
    """With kv_in_place the buffers stay put and kv_rows tells each survivor's K, V apart: the
    same keys as the moved cache, through two reorders and a sentence leaving; a first step's
    one row per sentence grows to its beams, and a full buffer gets room for the next position."""
    torch.manual_seed(0)
    keys, values = torch.randn(6, 2, 16, 4), torch.randn(6, 2, 16, 4)
    moved = DecoderCache(position=5, self_kv=[(keys.clone(), values.clone())])
    kept = DecoderCache(position=5, self_kv=[(keys.clone(), values.clone())])
    buffer = kept.self_kv[0][0].data_ptr()
    for rows in (torch.tensor([1, 1, 0, 5, 3, 2]), torch.tensor([2, 2, 4, 0]), torch.tensor([3, 0])):
        moved, kept = moved.index_select(rows), kept.index_select(rows, kv_in_place=True)
        assert kept.kv_rows.shape == (rows.numel(), 5) and kept.self_kv[0][0].data_ptr() == buffer
        torch.testing.assert_close(_read_through_rows(kept), moved.self_kv[0][0][:, :, :5])

    first = DecoderCache(position=1, self_kv=[(keys[:2, :, :1].contiguous(), values[:2, :, :1].contiguous())])
    beams = first.index_select(torch.tensor([0, 0, 0, 1, 1, 1]), same_sources=True, kv_in_place=True)
    assert beams.self_kv[0][0].shape == (6, 2, 16, 4)  # rows for every beam, room for 15 more positions
    assert beams.kv_rows.tolist() == [[0], [0], [0], [1], [1], [1]]
    torch.testing.assert_close(_read_through_rows(beams), keys[[0, 0, 0, 1, 1, 1], :, :1])


def test_reserve_gives_room_for_later_positions_and_keeps_the_filled_ones():
    torch.manual_seed(0)
    keys, values = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)  # exactly 5 filled positions
    cache = DecoderCache(position=5, self_kv=[(keys, values)])
    roomy = cache.reserve(20)
    assert roomy.position == 5 and roomy.self_kv[0][0].shape == (3, 2, 32, 4)  # rounded up to 16s
    torch.testing.assert_close(roomy.self_kv[0][0][:, :, :5], keys)
    torch.testing.assert_close(roomy.self_kv[0][1][:, :, :5], values)
    assert roomy.reserve(20).self_kv is roomy.self_kv  # room enough: nothing copied
