"""Plain-numpy reference of the ELMo biLM forward pass (bilm-tf, Peters et al. 2018).

Used only as a test oracle: simple loops, float64 throughout, no deep-learning framework.
Weights use the bilm-tf HDF5 layout (see ``load_weights``).
"""
import h5py
import numpy as np

# Character ids before the +1 offset (bilm-tf UnicodeCharsVocabulary / AllenNLP ELMoCharacterMapper).
BOS_CHAR = 256
EOS_CHAR = 257
BOW_CHAR = 258
EOW_CHAR = 259
PAD_CHAR = 260
MAX_CHARS = 50

BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"


# ----------------------------------------------------------------------------- characters

def token_char_ids(token):
    """Character ids of one token, shape (50,) int32, with the +1 offset (0 = padding)."""
    code = np.full(MAX_CHARS, PAD_CHAR, dtype=np.int32)
    code[0] = BOW_CHAR
    if token in (BOS_TOKEN, EOS_TOKEN):
        chars = [BOS_CHAR if token == BOS_TOKEN else EOS_CHAR]
    else:
        chars = list(token.encode("utf-8", "ignore")[: MAX_CHARS - 2])
    code[1 : 1 + len(chars)] = chars
    code[1 + len(chars)] = EOW_CHAR
    return code + 1


def sentences_char_ids(sentences, add_boundaries):
    """Batch of tokenized sentences -> (ids [b, max_len, 50] int32, lengths [b]); pad tokens are all 0."""
    if add_boundaries:
        sentences = [[BOS_TOKEN] + list(s) + [EOS_TOKEN] for s in sentences]
    lengths = np.array([len(s) for s in sentences], dtype=np.int64)
    ids = np.zeros((len(sentences), max(lengths, default=0), MAX_CHARS), dtype=np.int32)
    for k, sentence in enumerate(sentences):
        for t, token in enumerate(sentence):
            ids[k, t] = token_char_ids(token)
    return ids, lengths


# ----------------------------------------------------------------------------- weights

def load_weights(hdf5_path):
    """Read every dataset of a bilm-tf weight file into a dict keyed by its HDF5 path."""
    weights = {}
    with h5py.File(hdf5_path, "r") as f:
        f.visititems(lambda name, obj: weights.__setitem__(name, obj[...])
                     if isinstance(obj, h5py.Dataset) else None)
    return weights


def _lstm_path(direction, layer, name):
    return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell/{name}"


def _sizes(options):
    """(n_filters, projection_dim, lstm dim, lstm output dim, use_proj for the char CNN)."""
    filters = options["char_cnn"]["filters"]
    n_filters = sum(n for _, n in filters)
    proj, dim = options["lstm"]["projection_dim"], options["lstm"]["dim"]
    lstm_out = proj if proj < dim else dim
    return n_filters, proj, dim, lstm_out, n_filters != proj


def random_weights(options, seed):
    """A full random model (float32) for any bilm-tf options dict, scaled to keep activations lively."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: (rng.standard_normal(shape) * 0.3).astype(np.float32)
    small = lambda *shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)
    cnn = options["char_cnn"]
    char_dim = cnn["embedding"]["dim"]
    n_filters, proj, dim, lstm_out, cnn_proj = _sizes(options)

    w = {"char_embed": normal(cnn.get("n_characters", 262) - 1, char_dim)}
    for k, (width, n) in enumerate(cnn["filters"]):
        w[f"CNN/W_cnn_{k}"] = normal(1, width, char_dim, n)
        w[f"CNN/b_cnn_{k}"] = small(n)
    for k in range(cnn.get("n_highway", 0)):
        w[f"CNN_high_{k}/W_carry"] = normal(n_filters, n_filters) / np.sqrt(n_filters / 4)
        w[f"CNN_high_{k}/b_carry"] = small(n_filters)
        w[f"CNN_high_{k}/W_transform"] = normal(n_filters, n_filters) / np.sqrt(n_filters / 4)
        w[f"CNN_high_{k}/b_transform"] = small(n_filters)
    if cnn_proj:
        w["CNN_proj/W_proj"] = normal(n_filters, proj) / np.sqrt(n_filters / 4)
        w["CNN_proj/b_proj"] = small(proj)
    for d in range(2):
        for layer in range(options["lstm"]["n_layers"]):
            n_in = proj if layer == 0 else lstm_out
            w[_lstm_path(d, layer, "W_0")] = normal(n_in + lstm_out, 4 * dim)
            w[_lstm_path(d, layer, "B")] = small(4 * dim)
            if proj < dim:
                w[_lstm_path(d, layer, "W_P_0")] = normal(dim, proj)
    return {k: v.astype(np.float32) for k, v in w.items()}


def write_weights(path, weights):
    """Write a weight dict (as from ``random_weights``) to HDF5 in the bilm-tf layout."""
    with h5py.File(path, "w") as f:
        for name, value in weights.items():
            f.create_dataset(name, data=value)


# ----------------------------------------------------------------------------- char CNN

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def char_encoder(weights, options, ids):
    """Character CNN + highway + projection: ids [b, t, 50] -> token embeddings [b, t, P] (float64)."""
    cnn = options["char_cnn"]
    act = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}[cnn["activation"]]
    table = np.vstack([np.zeros((1, cnn["embedding"]["dim"])), weights["char_embed"].astype(np.float64)])
    emb = table[np.asarray(ids)]  # [b, t, chars, char_dim]

    pooled = []
    for k, (width, _) in enumerate(cnn["filters"]):
        kernel = weights[f"CNN/W_cnn_{k}"][0].astype(np.float64)  # [width, char_dim, n]
        windows = np.lib.stride_tricks.sliding_window_view(emb, width, axis=2)  # [b, t, pos, dim, width]
        conv = np.einsum("btpdw,wdn->btpn", windows, kernel) + weights[f"CNN/b_cnn_{k}"]
        pooled.append(act(conv.max(axis=2)))  # max over positions, then activation
    x = np.concatenate(pooled, axis=-1)

    for k in range(cnn.get("n_highway", 0)):
        w = lambda name: weights[f"CNN_high_{k}/{name}"].astype(np.float64)
        carry = _sigmoid(x @ w("W_carry") + w("b_carry"))
        transform = np.maximum(x @ w("W_transform") + w("b_transform"), 0.0)
        x = carry * transform + (1.0 - carry) * x

    if _sizes(options)[4]:
        x = x @ weights["CNN_proj/W_proj"].astype(np.float64) + weights["CNN_proj/b_proj"]
    return x


# ----------------------------------------------------------------------------- LSTM

def _lstm_step(weights, options, direction, layer, x, c, h):
    """One tf.nn.rnn_cell.LSTMCell step (gate order i, j, f, o; forget bias 1.0; clips)."""
    lstm = options["lstm"]
    p = lambda name: weights[_lstm_path(direction, layer, name)].astype(np.float64)
    z = np.concatenate([x, h], axis=-1) @ p("W_0") + p("B")
    i, j, f, o = np.split(z, 4, axis=-1)
    c = _sigmoid(f + 1.0) * c + _sigmoid(i) * np.tanh(j)
    if lstm.get("cell_clip") is not None:
        c = np.clip(c, -lstm["cell_clip"], lstm["cell_clip"])
    h = _sigmoid(o) * np.tanh(c)
    if lstm["projection_dim"] < lstm["dim"]:
        h = h @ p("W_P_0")
        if lstm.get("proj_clip") is not None:
            h = np.clip(h, -lstm["proj_clip"], lstm["proj_clip"])
    return c, h


def _reverse_rows(x, lengths):
    """tf.reverse_sequence on axis 1: reverse each row within its own length."""
    out = x.copy()
    for k, n in enumerate(lengths):
        out[k, :n] = x[k, :n][::-1]
    return out


def zero_state(options, batch_size):
    """Initial state: state[direction][layer] = (c [b, dim], h [b, lstm_out])."""
    _, _, dim, lstm_out, _ = _sizes(options)
    return [[(np.zeros((batch_size, dim)), np.zeros((batch_size, lstm_out)))
             for _ in range(options["lstm"]["n_layers"])] for _ in range(2)]


def bilm_lstm(weights, options, emb, lengths, initial_state=None):
    """Bidirectional stacked LSTM over emb [b, t, P] -> (list of layer outputs [b, t, 2*out], final state)."""
    b, t, _ = emb.shape
    n_layers = options["lstm"]["n_layers"]
    skip = options["lstm"].get("use_skip_connections", False)
    state = initial_state if initial_state is not None else zero_state(options, b)
    mask = (np.arange(t)[None, :] < np.asarray(lengths)[:, None])[:, :, None]  # [b, t, 1]

    outputs = [[None, None] for _ in range(n_layers)]
    final = [[None] * n_layers for _ in range(2)]
    for d in range(2):
        x = emb if d == 0 else _reverse_rows(emb, lengths)
        for layer in range(n_layers):
            c, h = (np.asarray(s, dtype=np.float64) for s in state[d][layer])
            ys = []
            for step in range(t):
                new_c, new_h = _lstm_step(weights, options, d, layer, x[:, step], c, h)
                m = mask[:, step]
                c, h = np.where(m, new_c, c), np.where(m, new_h, h)  # state frozen past the length
                y = new_h + x[:, step] if skip and layer > 0 else new_h
                ys.append(np.where(m, y, 0.0))
            x = np.stack(ys, axis=1)
            final[d][layer] = (c, h)
            outputs[layer][d] = x if d == 0 else _reverse_rows(x, lengths)
    return [np.concatenate(o, axis=-1) for o in outputs], final


def bilm_forward(weights, options, sentences, initial_state=None):
    """Full biLM on tokenized sentences; boundaries are added, then stripped from the outputs.

    Returns {"word_emb", "lstm_outputs1", ..., "final_state"}; padding positions are exactly 0.
    Passing "final_state" back as ``initial_state`` continues each row statefully (bilm-tf).
    """
    ids, lengths = sentences_char_ids(sentences, add_boundaries=True)
    mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None])[:, :, None]
    emb = np.where(mask, char_encoder(weights, options, ids), 0.0)
    layers, final = bilm_lstm(weights, options, emb, lengths, initial_state)

    def strip(x):  # drop <S> (position 0) and each row's own </S>
        out = np.zeros((x.shape[0], max(x.shape[1] - 2, 0), x.shape[2]))
        for k, n in enumerate(lengths):
            out[k, : n - 2] = x[k, 1 : n - 1]
        return out

    result = {"word_emb": strip(emb), "final_state": final}
    for i, y in enumerate(layers):
        result[f"lstm_outputs{i + 1}"] = strip(y)
    return result
