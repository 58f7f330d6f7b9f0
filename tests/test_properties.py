"""Property tests: for random valid dims per family, the compiler's parameter count and output
shapes equal those of the instantiated generated module."""

from __future__ import annotations

import sys
import types

import pytest

torch = pytest.importorskip("torch")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from metagen_backends.pytorch import emit

from metagen_compiler.driver import compile_source
from metagen_compiler.primitives import subst_dim
from metagen_compiler.semantics.tasks import TASK_SPECS
from metagen_compiler.span import SourceFile

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def build(src: str):  # type: ignore[no-untyped-def]
    comp = compile_source(SourceFile("prop.msl", src))
    assert not comp.bag.has_errors, [d.message for d in comp.bag.items]
    code = emit(comp)["model.py"]
    mod = types.ModuleType("prop_model")
    sys.modules["prop_model"] = mod  # dataclasses look their module up while the class is made
    exec(compile(code, "prop_model.py", "exec"), mod.__dict__)  # noqa: S102 - our own generated code
    return comp, mod


def check(comp, mod, batch: int = 2) -> None:  # type: ignore[no-untyped-def]
    """The instantiated module's parameter count and every output's shape (a head may return several
    tensors: detection's logits and boxes) as the compiler predicted them."""
    model = mod.build_model()
    assert sum(p.numel() for p in model.parameters()) == comp.graph.g.graph["estimates"]["params"]
    with torch.no_grad():
        out = model(*mod.example_inputs(model, batch_size=batch))
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(comp.graph.outputs)
    for o, (_name, t) in zip(outs, comp.graph.outputs, strict=True):
        assert tuple(o.shape) == tuple(subst_dim(d, {**comp.graph.symbols, "B": batch}) for d in comp.graph.shape_of(t))


def train_step(mod, batch_size: int):  # type: ignore[no-untyped-def]
    """A fresh model and its example batch after one loss and backward: the loss a finite scalar."""
    model = mod.build_model()
    batch = mod.example_batch(model, batch_size=batch_size)
    loss = model.loss(batch)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    return model, batch


@SETTINGS
@given(layers=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), hd=st.sampled_from([8, 16]),
       kv_div=st.sampled_from([1, 2, 4]), norm=st.sampled_from(["layernorm", "rmsnorm"]),
       mlp=st.sampled_from(["gelu_mlp", "swiglu"]), position=st.sampled_from(["learned", "rope"]),
       tied=st.booleans(), bias=st.booleans(), vocab=st.integers(16, 200), context=st.integers(4, 24))
def test_decoder(layers, heads, hd, kv_div, norm, mlp, position, tied, bias, vocab, context) -> None:  # type: ignore[no-untyped-def]
    kv = heads // kv_div if heads % kv_div == 0 else heads
    src = f"""import std.transformer
model p {{
  modality text -> text
  task generation
  constraints {{ context = {context} }}
  architecture transformer.decoder {{
    vocab = {vocab}; layers = {layers}; d_model = {heads * hd}; heads = {heads}; kv_heads = {kv}
    norm = {norm}; mlp = {mlp}; position = {position}; tied = {str(tied).lower()}; bias = {str(bias).lower()}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), hd=st.sampled_from([8, 16]),
       image=st.sampled_from([16, 32]), patch=st.sampled_from([4, 8, 16]), mlp_mult=st.integers(1, 4),
       classes=st.integers(2, 20))
def test_vit(layers, heads, hd, image, patch, mlp_mult, classes) -> None:  # type: ignore[no-untyped-def]
    d = heads * hd
    src = f"""import std.vision
model p {{
  modality image -> label
  task classification {{ num_classes = {classes} }}
  constraints {{ image_size = {image}; patch_size = {patch} }}
  architecture vision.vit {{ layers = {layers}; d_model = {d}; heads = {heads}; mlp_dim = {mlp_mult * d} }}
}}"""
    check(*build(src))


@SETTINGS
@given(width=st.sampled_from([8, 16]), depths=st.lists(st.integers(1, 2), min_size=4, max_size=4),
       bottleneck=st.booleans(), image=st.sampled_from([32, 64]), classes=st.integers(2, 20))
def test_resnet(width, depths, bottleneck, image, classes) -> None:  # type: ignore[no-untyped-def]
    unit, exp = ("bottleneck", 4) if bottleneck else ("basic_block", 1)
    src = f"""import std.vision
model p {{
  modality image -> label
  task classification {{ num_classes = {classes} }}
  constraints {{ image_size = {image} }}
  architecture vision.resnet {{ width = {width}; depths = {list(depths)}; unit = {unit}; expansion = {exp} }}
}}"""
    check(*build(src))


@SETTINGS
@given(width=st.sampled_from([8, 16, 24]), depths=st.lists(st.integers(0, 2), min_size=4, max_size=4),
       image=st.sampled_from([32, 48, 64]), classes=st.integers(2, 20))
def test_convnext(width, depths, image, classes) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.vision
model p {{
  modality image -> label
  task classification {{ num_classes = {classes} }}
  constraints {{ image_size = {image} }}
  architecture vision.convnext {{ width = {width}; depths = {list(depths)} }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 2), heads=st.sampled_from([1, 2]), hd=st.sampled_from([8, 16]),
       stem=st.sampled_from([4, 8]), image=st.sampled_from([16, 32]), patch=st.sampled_from([4, 8, 16]),
       classes=st.integers(2, 20))
def test_hybrid(layers, heads, hd, stem, image, patch, classes) -> None:  # type: ignore[no-untyped-def]
    d = heads * hd
    src = f"""import std.vision
model p {{
  modality image -> label
  task classification {{ num_classes = {classes} }}
  constraints {{ image_size = {image}; patch_size = {patch} }}
  architecture vision.hybrid {{ layers = {layers}; d_model = {d}; heads = {heads}; stem_width = {stem} }}
}}"""
    check(*build(src))


@SETTINGS
@given(points=st.integers(2, 40), coords=st.integers(2, 6), width=st.sampled_from([4, 8, 16]),
       transform=st.booleans(), classes=st.integers(2, 20))
def test_pointnet(points, coords, width, transform, classes) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.pointcloud
model p {{
  modality point_cloud -> label
  task classification {{ num_classes = {classes} }}
  architecture pointcloud.pointnet {{
    points = {points}; coords = {coords}; width = {width}; input_transform = {str(transform).lower()}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(variational=st.booleans(), features=st.integers(1, 40), hidden=st.sampled_from([8, 16, 32]),
       latent=st.integers(1, 8), embedding=st.booleans())
def test_tabular_autoencoder(variational, features, hidden, latent, embedding) -> None:  # type: ignore[no-untyped-def]
    family = "vae" if variational else "autoencoder"
    task, out = ("embedding", "embedding") if embedding else ("anomaly_detection", "tabular")
    src = f"""import std.autoencoder
model p {{
  modality tabular -> {out}
  task {task}
  architecture autoencoder.{family} {{ features = {features}; hidden = {hidden}; latent = {latent} }}
}}"""
    check(*build(src))


@SETTINGS
@given(variational=st.booleans(), channels=st.integers(1, 3), width=st.sampled_from([4, 8]),
       image=st.sampled_from([8, 16, 24, 32]), latent=st.integers(1, 16))
def test_image_autoencoder(variational, channels, width, image, latent) -> None:  # type: ignore[no-untyped-def]
    family = "conv_vae" if variational else "conv_autoencoder"
    src = f"""import std.autoencoder
model p {{
  modality image -> image
  task anomaly_detection
  constraints {{ image_size = {image} }}
  architecture autoencoder.{family} {{ channels = {channels}; width = {width}; latent = {latent} }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    model = mod.build_model()
    (x,) = mod.example_inputs(model, batch_size=2)
    assert model(x).shape == x.shape  # a reconstruction of the input


@SETTINGS
@given(layers=st.integers(1, 3), d_model=st.sampled_from([16, 32, 48]), d_state=st.integers(1, 8),
       d_conv=st.integers(1, 5), expand=st.integers(1, 3), dt_rank=st.integers(1, 8), tied=st.booleans(),
       vocab=st.integers(16, 200), context=st.integers(2, 12))
def test_mamba(layers, d_model, d_state, d_conv, expand, dt_rank, tied, vocab, context) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.ssm
model p {{
  modality text -> text
  task generation
  constraints {{ context = {context} }}
  architecture ssm.mamba {{
    vocab = {vocab}; layers = {layers}; d_model = {d_model}; d_state = {d_state}; d_conv = {d_conv}
    expand = {expand}; dt_rank = {dt_rank}; tied = {str(tied).lower()}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 2), heads=st.sampled_from([1, 2]), hd=st.sampled_from([8, 16]), kv_div=st.sampled_from([1, 2]),
       hidden=st.integers(4, 48), experts=st.integers(1, 6), top_k=st.integers(1, 3),
       capacity_factor=st.sampled_from([0.5, 1.0, 1.25, 2.0]), normalize=st.booleans(), tied=st.booleans(),
       vocab=st.integers(16, 200), context=st.integers(2, 12))
def test_moe_decoder(layers, heads, hd, kv_div, hidden, experts, top_k, capacity_factor, normalize, tied, vocab,  # type: ignore[no-untyped-def]
                     context) -> None:
    kv = heads // kv_div if heads % kv_div == 0 else heads
    src = f"""import std.moe
model p {{
  modality text -> text
  task generation
  constraints {{ context = {context} }}
  architecture moe.decoder {{
    vocab = {vocab}; layers = {layers}; d_model = {heads * hd}; heads = {heads}; kv_heads = {kv}; hidden = {hidden}
    experts = {experts}; top_k = {min(top_k, experts)}; capacity_factor = {capacity_factor}
    normalize = {str(normalize).lower()}; tied = {str(tied).lower()}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 3), d_model=st.sampled_from([16, 32, 48]), modes=st.integers(1, 8),
       norm=st.sampled_from(["layernorm", "rmsnorm"]), tied=st.booleans(), vocab=st.integers(16, 200),
       context=st.integers(2, 12))
def test_s4d(layers, d_model, modes, norm, tied, vocab, context) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.ssm
model p {{
  modality text -> text
  task generation
  constraints {{ context = {context} }}
  architecture ssm.s4d {{
    vocab = {vocab}; layers = {layers}; d_model = {d_model}; d_state = {2 * modes}; norm = {norm}; tied = {str(tied).lower()}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(gat=st.booleans(), links=st.booleans(), nodes=st.integers(1, 30), edges=st.integers(0, 60),
       features=st.integers(1, 20), hidden=st.sampled_from([8, 16]), heads=st.integers(1, 3), layers=st.integers(0, 2),
       width=st.integers(2, 9))
def test_graph_networks(gat, links, nodes, edges, features, hidden, heads, layers, width) -> None:  # type: ignore[no-untyped-def]
    family = "gat" if gat else "gcn"
    extra = f"; heads = {heads}" if gat else ""
    task = f"link_prediction {{ embedding_dim = {width} }}" if links else f"node_classification {{ num_classes = {width} }}"
    src = f"""import std.graph
model g {{
  modality graph -> {"embedding" if links else "label"}
  task {task}
  architecture graph.{family} {{
    nodes = {nodes}; edges = {edges}; features = {features}; hidden = {hidden}; layers = {layers}{extra}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 2), heads=st.sampled_from([1, 2]), hd=st.sampled_from([8, 16]),
       tubelet=st.sampled_from([1, 2]), t=st.integers(1, 3), image=st.sampled_from([8, 16]),
       patch=st.sampled_from([4, 8]), mlp_mult=st.integers(1, 3), classes=st.integers(2, 20),
       regression=st.booleans())
def test_video_divided(layers, heads, hd, tubelet, t, image, patch, mlp_mult, classes, regression) -> None:  # type: ignore[no-untyped-def]
    d = heads * hd
    task = "regression" if regression else f"classification {{ num_classes = {classes} }}"
    out = "regression" if regression else "label"
    src = f"""import std.video
model p {{
  modality video -> {out}
  task {task}
  architecture video.divided {{
    frames = {tubelet * t}; tubelet = {tubelet}; image_size = {image}; patch_size = {patch}
    layers = {layers}; d_model = {d}; heads = {heads}; mlp_dim = {mlp_mult * d}; num_classes = {classes}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(mult=st.lists(st.sampled_from([1, 2, 3]), min_size=0, max_size=2), attn=st.lists(st.booleans(), min_size=3,
       max_size=3), layers_per_block=st.integers(1, 2), groups=st.sampled_from([4, 8]), heads=st.sampled_from([1, 2, 4]),
       depth=st.integers(1, 2), channels=st.integers(1, 4), side=st.sampled_from([1, 2, 3]),
       schedule=st.sampled_from(["linear", "scaled_linear", "cosine"]), text_width=st.sampled_from([8, 16]),
       context=st.integers(1, 6))
def test_diffusion_unet(mult, attn, layers_per_block, groups, heads, depth, channels, side, schedule, text_width,
                        context) -> None:  # type: ignore[no-untyped-def]
    mult = [1, *mult]  # base is the first level's channels
    levels = len(mult)
    image = side * 2 ** (levels - 1)
    msl = lambda xs: "[" + ", ".join(str(x).lower() for x in xs) + "]"
    src = f"""import std.diffusion
model d {{
  modality text, image -> image
  task denoising
  architecture diffusion.unet {{
    image_size = {image}; channels = {channels}; timesteps = 50; beta_schedule = {schedule}
    vocab = 31; context = {context}; text_layers = 1; text_width = {text_width}; text_heads = 2
    base = {groups * heads}; channel_mult = {msl(mult)}; attention_levels = {msl(attn[:levels])}
    layers_per_block = {layers_per_block}; heads = {heads}; transformer_depth = {depth}; groups = {groups}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    model = mod.build_model()
    x, t, ids = mod.example_inputs(model, batch_size=2)
    assert model(x, t, ids).shape == x.shape  # the predicted noise, one value per latent element
    assert model.alphas_cumprod.shape == (50,) and bool((model.alphas_cumprod.diff() < 0).all())


@SETTINGS
@given(vision_layers=st.integers(1, 2), vision_heads=st.sampled_from([1, 2]), vhd=st.sampled_from([8, 16]),
       image=st.sampled_from([8, 16]), patch=st.sampled_from([4, 8]), layers=st.integers(1, 2),
       heads=st.sampled_from([1, 2, 4]), hd=st.sampled_from([8, 16]), kv_div=st.sampled_from([1, 2]),
       vocab=st.integers(16, 120), context=st.integers(2, 10),
       task=st.sampled_from(["generation", "multimodal_generation"]))
def test_vlm(vision_layers, vision_heads, vhd, image, patch, layers, heads, hd, kv_div, vocab, context,  # type: ignore[no-untyped-def]
             task) -> None:
    kv = heads // kv_div if heads % kv_div == 0 else heads
    width = vision_heads * vhd
    src = f"""import std.vlm
model p {{
  modality image, text -> text
  task {task}
  constraints {{ context = {context} }}
  architecture vlm.vlm {{
    image_size = {image}; patch_size = {patch}; vision_layers = {vision_layers}; vision_width = {width}
    vision_heads = {vision_heads}; vocab = {vocab}; layers = {layers}; d_model = {heads * hd}; heads = {heads}
    kv_heads = {kv}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(kind=st.sampled_from(["early", "cross", "late"]), layers=st.integers(1, 2), heads=st.sampled_from([1, 2]),
       hd=st.sampled_from([8, 16]), image=st.sampled_from([8, 16]), patch=st.sampled_from([4, 8]),
       vocab=st.integers(16, 120), context=st.integers(2, 10), classes=st.integers(2, 12),
       task=st.sampled_from(["multimodal_classification", "multimodal_question_answering"]))
def test_fusion(kind, layers, heads, hd, image, patch, vocab, context, classes, task) -> None:  # type: ignore[no-untyped-def]
    depth = {"early": f"layers = {layers}", "cross": f"image_layers = {layers}; layers = {3 - layers}",
             "late": f"image_layers = {layers}; text_layers = {3 - layers}; hidden = {hd}"}[kind]
    src = f"""import std.fusion
model p {{
  modality image, text -> label
  task {task} {{ num_classes = {classes} }}
  constraints {{ context = {context} }}
  architecture fusion.{kind} {{
    image_size = {image}; patch_size = {patch}; vocab = {vocab}; d_model = {heads * hd}; heads = {heads}
    mlp_dim = {2 * heads * hd}; {depth}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    model, batch = train_step(mod, 2)
    metrics = model.metrics(batch)
    assert set(metrics) == set(TASK_SPECS[task].metrics) and all(torch.isfinite(v) for v in metrics.values())


@SETTINGS
@given(gat=st.booleans(), nodes=st.integers(2, 30), edges=st.integers(1, 60), features=st.integers(1, 9),
       hidden=st.sampled_from([8, 16]), heads=st.sampled_from([1, 2]), layers=st.integers(0, 2),
       graphs=st.integers(1, 4), classes=st.integers(2, 6))
def test_graph_classifiers(gat, nodes, edges, features, hidden, heads, layers, graphs, classes) -> None:  # type: ignore[no-untyped-def]
    family, extra = ("gat_graph", f"; heads = {heads}") if gat else ("gcn_graph", "")
    src = f"""import std.graph
model g {{
  modality graph -> label
  task graph_classification {{ num_classes = {classes} }}
  architecture graph.{family} {{
    nodes = {nodes}; edges = {edges}; features = {features}; hidden = {hidden}; layers = {layers}
    graphs = {graphs}{extra}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(width=st.sampled_from([8, 16]), depth=st.integers(1, 2), image=st.sampled_from([32, 64, 96]),
       classes=st.integers(1, 120), channels=st.integers(1, 3))
def test_yolo(width, depth, image, classes, channels) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.detection
model y {{
  modality image -> bounding_boxes
  task object_detection {{ num_classes = {classes} }}
  constraints {{ image_size = {image}; channels = {channels} }}
  architecture detection.yolo {{ width = {width}; depth = {depth} }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 2), decoder_layers=st.integers(1, 2), heads=st.sampled_from([1, 2, 4]),
       hd=st.sampled_from([16, 32]), ffn=st.sampled_from([32, 64]), queries=st.integers(1, 12),
       depths=st.lists(st.integers(1, 2), min_size=4, max_size=4), image=st.sampled_from([32, 64, 96]),
       classes=st.integers(1, 100))
def test_detr(layers, decoder_layers, heads, hd, ffn, queries, depths, image, classes) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.detection
model d {{
  modality image -> bounding_boxes
  task object_detection {{ num_classes = {classes} }}
  constraints {{ image_size = {image} }}
  architecture detection.detr {{
    width = 8; depths = {depths}; d_model = {heads * hd}; heads = {heads}; ffn = {ffn}; layers = {layers}
    decoder_layers = {decoder_layers}; num_queries = {queries}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(task=st.sampled_from(["policy_gradient", "value_based", "actor_critic"]), cnn=st.booleans(),
       features=st.integers(1, 40), hidden=st.sampled_from([16, 32, 48]), layers=st.integers(0, 3),
       act=st.sampled_from(["tanh", "relu"]), actions=st.integers(1, 20), channels=st.integers(1, 4),
       image=st.integers(36, 90))
def test_rl_agents(task, cnn, features, hidden, layers, act, actions, channels, image) -> None:  # type: ignore[no-untyped-def]
    if cnn:
        inp, arch = "image", (f"rl.nature_cnn {{ channels = {channels}; image_size = {image}; hidden = {hidden} }}")
    else:
        inp, arch = "tabular", (f"rl.mlp_agent {{ features = {features}; hidden = {hidden}; layers = {layers}; "
                                f"act = {act} }}")
    src = f"""import std.rl
model p {{
  modality {inp} -> action
  task {task} {{ num_actions = {actions} }}
  architecture {arch}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    model, batch = train_step(mod, 3)
    assert model.act(batch[inp], greedy=True).shape == (3,)


@SETTINGS
@given(features=st.integers(1, 40), actions=st.integers(1, 12), hidden=st.sampled_from([16, 32]),
       layers=st.integers(0, 3))
def test_world_model(features, actions, hidden, layers) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.rl
model p {{
  modality tabular -> tabular
  task model_based {{ num_actions = {actions} }}
  architecture rl.world_model {{ features = {features}; hidden = {hidden}; layers = {layers} }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    model = mod.build_model()
    assert model.act(mod.example_inputs(model, batch_size=3)[0], greedy=True).shape == (3,)


@SETTINGS
@given(ranking=st.booleans(), users=st.integers(1, 60), items=st.integers(1, 60), embedding=st.sampled_from([4, 8, 16]),
       hidden=st.sampled_from([16, 32]), layers=st.integers(0, 2), output=st.integers(1, 12), ranking_hidden=st.integers(1, 20))
def test_two_tower(ranking, users, items, embedding, hidden, layers, output, ranking_hidden) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.recsys
model p {{
  modality user, item -> {"label" if ranking else "embedding"}
  task {"ranking" if ranking else "recommendation"}
  architecture recsys.two_tower {{
    num_users = {users}; num_items = {items}; embedding_dim = {embedding}; hidden = {hidden}; layers = {layers}
    output_dim = {output}; ranking_hidden = {ranking_hidden}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    model, batch = train_step(mod, 6)
    assert all(torch.isfinite(v) for v in model.metrics(batch).values())


@SETTINGS
@given(critic=st.booleans(), features=st.integers(1, 30), hidden=st.sampled_from([16, 32]), layers=st.integers(0, 2),
       action_dim=st.integers(1, 8))
def test_gaussian_agent(critic, features, hidden, layers, action_dim) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.rl
model p {{
  modality tabular -> action
  task {"actor_critic" if critic else "policy_gradient"}
  architecture rl.gaussian_agent {{ features = {features}; hidden = {hidden}; layers = {layers}; action_dim = {action_dim} }}
}}"""
    comp, mod = build(src)
    assert [n for n, _ in comp.graph.outputs] == (["mean", "log_std", "value"] if critic else ["mean", "log_std"])
    check(comp, mod)
    model, batch = train_step(mod, 3)
    assert model.act(batch["tabular"]).shape == (3, action_dim)


@SETTINGS
@given(task=st.sampled_from(["policy_gradient", "value_based", "actor_critic"]), channels=st.integers(1, 4),
       image=st.integers(8, 40), width=st.sampled_from([2, 4, 8]), hidden=st.sampled_from([8, 16]),
       actions=st.integers(1, 20))
def test_impala(task, channels, image, width, hidden, actions) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.rl
model p {{
  modality image -> action
  task {task} {{ num_actions = {actions} }}
  architecture rl.impala_cnn {{ channels = {channels}; image_size = {image}; width = {width}; hidden = {hidden} }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 2), heads=st.sampled_from([1, 2]), hd=st.sampled_from([8, 16]), frames=st.integers(1, 3),
       patch=st.sampled_from([1, 2]), side=st.integers(1, 3), channels=st.integers(1, 4), text_layers=st.integers(0, 1),
       context=st.integers(1, 6), schedule=st.sampled_from(["linear", "scaled_linear", "cosine"]))
def test_latte(layers, heads, hd, frames, patch, side, channels, text_layers, context, schedule) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.videodiffusion
model v {{
  modality text -> video
  task denoising
  constraints {{ context = {context} }}
  architecture videodiffusion.latte {{
    frames = {frames}; image_size = {patch * side}; patch_size = {patch}; channels = {channels}
    layers = {layers}; d_model = {heads * hd}; heads = {heads}; mlp_dim = {2 * heads * hd}; vocab = 50
    text_layers = {text_layers}; timesteps = 10; beta_schedule = {schedule}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 2), heads=st.sampled_from([1, 2]), hd=st.sampled_from([8, 16]), vocab=st.integers(8, 60),
       context=st.integers(2, 12), coords=st.integers(4, 64), task=st.sampled_from(["document_qa", "sequence_labeling",
       "classification", "embedding"]), classes=st.integers(2, 9))
def test_layoutlm(layers, heads, hd, vocab, context, coords, task, classes) -> None:  # type: ignore[no-untyped-def]
    out = {"document_qa": "text", "sequence_labeling": "label", "classification": "label", "embedding": "embedding"}[task]
    src = f"""import std.document
model d {{
  modality text -> {out}
  task {task}
  constraints {{ context = {context} }}
  architecture document.layoutlm {{
    vocab = {vocab}; coords = {coords}; layers = {layers}; d_model = {heads * hd}; heads = {heads}
    mlp_dim = {2 * heads * hd}; num_classes = {classes}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 2), heads=st.sampled_from([1, 2]), hd=st.sampled_from([8, 16]), points=st.integers(1, 40),
       text_layers=st.integers(0, 2), vocab=st.integers(8, 60), context=st.integers(1, 10))
def test_text_to_points(layers, heads, hd, points, text_layers, vocab, context) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.threed
model t {{
  modality text -> point_cloud
  task shape_generation
  constraints {{ context = {context} }}
  architecture threed.text_to_points {{
    vocab = {vocab}; points = {points}; text_layers = {text_layers}; layers = {layers}; d_model = {heads * hd}
    heads = {heads}; mlp_dim = {2 * heads * hd}
  }}
}}"""
    check(*build(src))


@SETTINGS
@given(layers=st.integers(1, 3), heads=st.sampled_from([1, 2, 4]), hd=st.sampled_from([8, 16]),
       codebooks=st.integers(1, 5), codebook_size=st.integers(2, 64), ffn=st.integers(1, 80), context=st.integers(2, 20))
def test_musicgen(layers, heads, hd, codebooks, codebook_size, ffn, context) -> None:  # type: ignore[no-untyped-def]
    d = heads * hd
    src = f"""import std.audiolm
model p {{
  modality audio -> audio
  task generation
  architecture audiolm.musicgen {{
    layers = {layers}; d_model = {d}; heads = {heads}; ffn_dim = {ffn}; codebooks = {codebooks}
    codebook_size = {codebook_size}; context = {context}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    # K tables of codebook_size + 1 rows, K heads, per layer 4 d^2 attention + 2 d ffn MLP + 2 norms, a final norm
    assert comp.graph.g.graph["estimates"]["params"] == (
        2 * codebooks * codebook_size * d + codebooks * d + layers * (4 * d * d + 2 * d * ffn + 4 * d) + 2 * d)
    model, batch = train_step(mod, 2)
    out = model.generate(batch["audio"][:, :, :2], 2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, codebooks, min(2, context) + 2)


@SETTINGS
@given(passages=st.integers(1, 6), data=st.data(), context=st.integers(2, 8), passage_length=st.integers(1, 9),
       retriever_layers=st.integers(1, 2), retriever_heads=st.sampled_from([1, 2, 4]), head_dim=st.sampled_from([8, 16]),
       layers=st.integers(1, 2), decoder_layers=st.integers(1, 2), heads=st.sampled_from([1, 2]),
       d_kv=st.sampled_from([8, 16]), d_ff=st.integers(8, 48))
def test_fid_rag(passages, data, context, passage_length, retriever_layers, retriever_heads, head_dim, layers,  # type: ignore[no-untyped-def]
                 decoder_layers, heads, d_kv, d_ff) -> None:
    top_k = data.draw(st.integers(1, passages))
    src = f"""import std.rag
model p {{
  modality text -> text
  task retrieval_generation
  architecture rag.fid_rag {{
    vocab = 61; context = {context}; passage_length = {passage_length}; num_passages = {passages}; top_k = {top_k}
    retriever_context = 16; retriever_layers = {retriever_layers}; retriever_d_model = {retriever_heads * head_dim}
    retriever_heads = {retriever_heads}; retriever_mlp = {2 * retriever_heads * head_dim}
    layers = {layers}; decoder_layers = {decoder_layers}; d_model = 64; heads = {heads}; d_kv = {d_kv}; d_ff = {d_ff}
    buckets = 4; max_distance = 8
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    model, batch = train_step(mod, 3)
    assert all(torch.isfinite(v) for v in model.metrics(batch).values())


@SETTINGS
@given(features=st.integers(1, 6), lookback=st.integers(2, 12), horizon=st.integers(1, 6), heads=st.sampled_from([1, 2, 4]),
       width=st.integers(1, 3), lstm_layers=st.integers(1, 2), causal=st.booleans())
def test_tft(features, lookback, horizon, heads, width, lstm_layers, causal) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.forecast
model p {{
  modality time_series -> time_series
  task time_series_forecast {{ horizon = {horizon}; lookback = {lookback} }}
  architecture forecast.tft {{
    features = {features}; d_model = {16 * width}; heads = {heads}; lstm_layers = {lstm_layers}
    causal = {"true" if causal else "false"}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    _model, batch = train_step(mod, 3)
    assert batch["target"].shape == (3, horizon, features)


@SETTINGS
@given(task=st.sampled_from(["instance_segmentation", "panoptic_segmentation"]),
       depths=st.lists(st.integers(1, 2), min_size=4, max_size=4), width=st.sampled_from([8, 16]),
       features=st.sampled_from([32, 64]), mask_dim=st.sampled_from([8, 32]), heads=st.sampled_from([1, 2, 4]),
       hd=st.sampled_from([8, 16]), ffn=st.sampled_from([16, 48]), decoder_layers=st.integers(1, 2),
       queries=st.integers(1, 8), image=st.sampled_from([32, 64]), classes=st.integers(1, 30))
def test_maskformer(task, depths, width, features, mask_dim, heads, hd, ffn, decoder_layers, queries, image,  # type: ignore[no-untyped-def]
                    classes) -> None:
    src = f"""import std.segmentation
model m {{
  modality image -> segmentation_mask
  task {task} {{ num_classes = {classes} }}
  constraints {{ image_size = {image} }}
  architecture segmentation.maskformer {{
    width = {width}; depths = {depths}; features = {features}; mask_dim = {mask_dim}; d_model = {heads * hd}
    heads = {heads}; ffn = {ffn}; decoder_layers = {decoder_layers}; num_queries = {queries}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    model, batch = train_step(mod, 2)
    assert all(torch.isfinite(v) for v in model.metrics(batch).values())


@SETTINGS
@given(vision_layers=st.integers(1, 2), vision_heads=st.sampled_from([1, 2]), vhd=st.sampled_from([8, 16]),
       image=st.sampled_from([8, 16]), patch=st.sampled_from([4, 8]), channels=st.integers(1, 3),
       vision_mlp=st.integers(4, 40), text_layers=st.integers(0, 2), text_heads=st.sampled_from([1, 2, 4]),
       thd=st.sampled_from([4, 8]), text_mlp=st.integers(4, 40), vocab=st.integers(16, 120), context=st.integers(2, 10),
       embed_dim=st.integers(1, 16))
def test_clip(vision_layers, vision_heads, vhd, image, patch, channels, vision_mlp, text_layers, text_heads, thd,  # type: ignore[no-untyped-def]
              text_mlp, vocab, context, embed_dim) -> None:
    src = f"""import std.multimodal
model p {{
  modality image, text -> embedding
  task multimodal_retrieval
  constraints {{ image_size = {image}; context = {context} }}
  architecture multimodal.clip {{
    patch_size = {patch}; channels = {channels}; vision_layers = {vision_layers}; vision_width = {vision_heads * vhd}
    vision_heads = {vision_heads}; vision_mlp = {vision_mlp}; vocab = {vocab}; text_layers = {text_layers}
    text_width = {text_heads * thd}; text_heads = {text_heads}; text_mlp = {text_mlp}; embed_dim = {embed_dim}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod, batch=3)
    train_step(mod, 3)


@SETTINGS
@given(task=st.sampled_from(["time_series_forecast", "sequence_labeling", "classification", "regression"]),
       text=st.booleans(), cell=st.sampled_from(["lstm", "gru"]), directions=st.sampled_from([1, 2]),
       layers=st.integers(1, 3), d_model=st.integers(2, 24), hidden=st.integers(1, 24), vocab=st.integers(8, 100),
       features=st.integers(1, 6), steps=st.integers(1, 10), horizon=st.integers(1, 5), classes=st.integers(2, 9))
def test_rnn(task, text, cell, directions, layers, d_model, hidden, vocab, features, steps, horizon, classes) -> None:  # type: ignore[no-untyped-def]
    text = task == "sequence_labeling" or (text and task != "time_series_forecast")
    out = {"time_series_forecast": "time_series", "sequence_labeling": "label", "classification": "label",
           "regression": "regression"}[task]
    spec = {"time_series_forecast": f"time_series_forecast {{ horizon = {horizon}; lookback = {steps} }}",
            "sequence_labeling": f"sequence_labeling {{ num_classes = {classes} }}",
            "classification": f"classification {{ num_classes = {classes} }}", "regression": "regression"}[task]
    if text:
        inp, constraints, dims = "text", f"constraints {{ context = {steps} }}", f"vocab = {vocab}"
    else:
        inp, constraints = "time_series", ""
        dims = f"features = {features}" + ("" if task == "time_series_forecast" else f"; lookback = {steps}")
    src = f"""import std.rnn
model p {{
  modality {inp} -> {out}
  task {spec}
  {constraints}
  architecture rnn.rnn {{
    {dims}; d_model = {d_model}; hidden = {hidden}; layers = {layers}; cell = {cell}; directions = {directions}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    train_step(mod, 3)


@SETTINGS
@given(layers=st.integers(1, 2), decoder_layers=st.integers(1, 2), heads=st.sampled_from([1, 2, 4]),
       d_kv=st.sampled_from([4, 8]), d_model=st.sampled_from([16, 24, 32]), d_ff=st.integers(4, 48),
       buckets=st.integers(4, 10), extra=st.integers(1, 8), vocab=st.integers(16, 120), context=st.integers(2, 10))
def test_t5(layers, decoder_layers, heads, d_kv, d_model, d_ff, buckets, extra, vocab, context) -> None:  # type: ignore[no-untyped-def]
    src = f"""import std.seq2seq
model p {{
  modality text -> text
  task generation
  constraints {{ context = {context} }}
  architecture seq2seq.t5 {{
    vocab = {vocab}; layers = {layers}; decoder_layers = {decoder_layers}; d_model = {d_model}; heads = {heads}
    d_kv = {d_kv}; d_ff = {d_ff}; buckets = {buckets}; max_distance = {buckets // 2 + extra}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    train_step(mod, 2)


@SETTINGS
@given(layers=st.integers(1, 2), decoder_layers=st.integers(1, 2), heads=st.sampled_from([1, 2]),
       hd=st.sampled_from([8, 16]), ffn=st.integers(4, 48), n_mels=st.integers(1, 16),
       samples=st.integers(201, 3200), spare=st.integers(0, 3), vocab=st.integers(16, 120), context=st.integers(2, 10))
def test_whisper(layers, decoder_layers, heads, hd, ffn, n_mels, samples, spare, vocab, context) -> None:  # type: ignore[no-untyped-def]
    # samples above n_fft / 2 = 200 (the STFT's reflect padding); positions: frames (one per 160 samples) halved
    src = f"""import std.seq2seq
model p {{
  modality audio -> text
  task speech_recognition
  architecture seq2seq.whisper {{
    vocab = {vocab}; samples = {samples}; n_mels = {n_mels}; context = {context}
    source_positions = {-(-samples // 320) + spare}; layers = {layers}; decoder_layers = {decoder_layers}
    d_model = {heads * hd}; heads = {heads}; ffn = {ffn}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    train_step(mod, 2)


@SETTINGS
@given(regression=st.booleans(), features=st.integers(1, 40), hidden=st.integers(1, 48), layers=st.integers(0, 3),
       act=st.sampled_from(["relu", "gelu", "tanh", "silu"]), dropout=st.sampled_from([0.0, 0.1]),
       width=st.integers(1, 9))
def test_tabular_mlp(regression, features, hidden, layers, act, dropout, width) -> None:  # type: ignore[no-untyped-def]
    task, out, extra = (("regression", "regression", f"outputs = {width}") if regression else
                        (f"classification {{ num_classes = {width + 1} }}", "label", ""))
    src = f"""import std.tabular
model p {{
  modality tabular -> {out}
  task {task}
  architecture tabular.mlp {{
    features = {features}; hidden = {hidden}; layers = {layers}; act = {act}; dropout = {dropout}; {extra}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod)
    train_step(mod, 3)


@SETTINGS
@given(task=st.sampled_from(["embedding", "classification", "sequence_labeling", "question_answering", "regression"]),
       layers=st.integers(1, 2), heads=st.sampled_from([1, 2, 4]), hd=st.sampled_from([4, 8]),
       mlp_dim=st.integers(4, 48), type_vocab=st.integers(1, 3), vocab=st.integers(8, 120), context=st.integers(2, 12),
       classes=st.integers(2, 9))
def test_bert_encoder(task, layers, heads, hd, mlp_dim, type_vocab, vocab, context, classes) -> None:  # type: ignore[no-untyped-def]
    out = {"embedding": "embedding", "classification": "label", "sequence_labeling": "label",
           "question_answering": "text", "regression": "regression"}[task]
    spec = f"{task} {{ num_classes = {classes} }}" if task in ("classification", "sequence_labeling") else task
    src = f"""import std.transformer
model p {{
  modality text -> {out}
  task {spec}
  constraints {{ context = {context} }}
  architecture transformer.encoder {{
    vocab = {vocab}; layers = {layers}; d_model = {heads * hd}; heads = {heads}; mlp_dim = {mlp_dim}
    type_vocab = {type_vocab}
  }}
}}"""
    comp, mod = build(src)
    check(comp, mod, batch=3)
    train_step(mod, 3)
