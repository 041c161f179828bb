"""The registry of the course's real datasets: name -> pinned source, checksum, licence, card.

Every file listed in the offline mirror's ``MANIFEST.md`` has one :class:`DatasetEntry`
here. The URL is pinned to a commit (GitHub "raw" links; the gene-ID and ortholog tables too)
or, for the two TF lists only, to an exact wheel on PyPI, so the bytes behind a name never
change and the SHA-256 can be checked on every use.
Chapter 01 introduces the registry; every chapter that loads real data goes through it.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["DatasetEntry", "UnknownDatasetError", "REGISTRY", "available", "get_entry", "info", "card_path"]

_RAW = "https://raw.githubusercontent.com"
_CARDS = Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class DatasetEntry:
    """One registered file.

    ``kind`` is ``"anndata"`` for files :func:`tflib.datasets.load` turns into AnnData and
    ``"table"`` for plain text tables that are only fetched (gene-ID maps, TF lists).
    ``wheel_member`` is set when the file lives inside a Python wheel: ``url`` then points at
    the wheel, ``wheel_sha256`` is the wheel's checksum and ``sha256`` the member's.
    """

    name: str
    file_name: str
    url: str
    sha256: str
    license: str
    source: str  # "owner/repo @ commit : path" or "package version wheel : member"
    kind: str  # "anndata" | "table"
    reader: str  # "h5ad" | "rda_pancreas" | "rda_seurat" | "table"
    description: str
    organism: str
    chapters: tuple[str, ...] = ()
    citation: str = ""
    packaged_by: str = ""
    meta: dict = field(default_factory=dict)
    wheel_member: str | None = None
    wheel_sha256: str | None = None

    @property
    def card(self) -> Path:
        """Path of the dataset card (``data/<name>.md`` in the course repository)."""
        return _CARDS / f"{self.name}.md"

    def provenance(self) -> dict:
        """The JSON-friendly record that readers store in ``adata.uns["dataset"]``."""
        record = {k: v for k, v in asdict(self).items() if v not in (None, "", (), {})}
        record["chapters"] = list(self.chapters)
        record["card"] = f"data/{self.name}.md"
        return record


def _gh(repo: str, commit: str, path: str) -> tuple[str, str]:
    return f"{_RAW}/{repo}/{commit}/{path}", f"{repo} @ {commit} : {path}"


_MOSCOT_WHL = (
    "https://files.pythonhosted.org/packages/d8/98/f53007592a0dff7c7f2dc0163f56663bb2c2fbfec85b9b3c04ea234852e7/"
    "moscot-0.5.2-py3-none-any.whl"
)
_MOSCOT_WHL_SHA = "262578d8b426ff125da42d8491ed3b22e9272d367182f1cbe4a1e3110ea5fa47"


def _entries() -> list[DatasetEntry]:
    out = []
    url, src = _gh("JEFworks-Lab/veloviz", "89a0b726ac6cf854a97a339d2479715b05fed8ec", "data/pancreas.rda")
    out.append(DatasetEntry(
        name="pancreas", file_name="pancreas_veloviz.rda", url=url, source=src,
        sha256="693ab462357559ed61be3775748d7ad18bdbff6a21745a0fb3d376994657febb",
        license="GPL-3", kind="anndata", reader="rda_pancreas", organism="Mus musculus",
        description="Mouse pancreatic endocrinogenesis at E15.5: 739 cells x 7,192 genes with "
                    "spliced/unspliced counts and 8 cluster labels (the scVelo pancreas data).",
        chapters=("01", "04", "08", "09", "10", "13"),
        citation="Bastidas-Ponce A, Tritschler S, Dony L, et al. Comprehensive single cell mRNA "
                 "profiling reveals a detailed roadmap for pancreatic endocrinogenesis. "
                 "Development 146(12):dev173849 (2019). GEO GSE132188.",
        packaged_by="VeloViz (Atta L, Sahoo A, Fan J. Bioinformatics 38(2):391-396, 2022), JEFworks-Lab/veloviz",
        meta={"tissue": "embryonic pancreas (E15.5)", "protocol": "10x Genomics Chromium 3'",
              "geo": "GSE132188"},
    ))
    url, src = _gh("theislab/cellrank", "c32a22021ff0de31e070d788954fb3d64f4f1afa",
                   "tests/_ground_truth_adatas/adata_200.h5ad")
    out.append(DatasetEntry(
        name="dentategyrus", file_name="dentategyrus_cellrank_200.h5ad", url=url, source=src,
        sha256="8f551647ef02a1e4ac771fdf058f316d4176101e6a5cd986abb58a7952572af4",
        license="BSD-3-Clause", kind="anndata", reader="h5ad", organism="Mus musculus",
        description="Mouse dentate gyrus, 200 cells x 530 genes, already processed by scVelo "
                    "(Ms, Mu, velocity layers; velocity graph). Small enough for unit tests.",
        chapters=("06",),
        citation="La Manno G, Soldatov R, Zeisel A, et al. RNA velocity of single cells. "
                 "Nature 560:494-498 (2018); data from Hochgerner H, Zeisel A, Lonnerberg P, "
                 "Linnarsson S. Nat Neurosci 21:290-299 (2018), GEO GSE95753.",
        packaged_by="CellRank test fixtures (Lange M, Bergen V, et al. Nat Methods 19:159-170, 2022), theislab/cellrank",
        meta={"tissue": "hippocampus, dentate gyrus (P12 and P35)", "protocol": "10x Genomics Chromium",
              "geo": "GSE95753"},
    ))
    url, src = _gh("pwwang/scplotter", "bf209517b02cb830e41a82fc9623c3afc8b5ec87", "data/ifnb_sub.rda")
    out.append(DatasetEntry(
        name="kang_pbmc", file_name="kang2018_ifnb_sub_scplotter.rda", url=url, source=src,
        sha256="449499b65ae3157f54385021710381bef93a04bc48000d7c7e896184f3b9d9a0",
        license="GPL-3.0-or-later", kind="anndata", reader="rda_seurat", organism="Homo sapiens",
        description="Human PBMC, control vs IFN-beta stimulated: 2,000 cells x 13,215 genes, "
                    "13 annotated cell types; raw counts rebuilt exactly from the log-normalised slot.",
        chapters=("01", "02", "04", "05", "06", "07", "14"),
        citation="Kang HM, Subramaniam M, Targ S, et al. Multiplexed droplet single-cell "
                 "RNA-sequencing using natural genetic variation. Nat Biotechnol 36:89-94 (2018). "
                 "GEO GSE96583.",
        packaged_by="scplotter (Panwen Wang), pwwang/scplotter; a subset of SeuratData's 'ifnb'",
        meta={"tissue": "peripheral blood mononuclear cells", "protocol": "10x Genomics Chromium 3'",
              "geo": "GSE96583", "batch_key": "stim"},
    ))
    url, src = _gh("theislab/scgen", "dd7e178f9b42b9dfef9eb18d0da4b8e3caea4cf7", "data/valid.h5ad")
    out.append(DatasetEntry(
        name="kang_scgen_valid", file_name="kang2018_scgen_valid.h5ad", url=url, source=src,
        sha256="83f89f5356a4c01f65bbcee225eb45d8d8b13b6c962724431a26c1bf568ff09e",
        license="GPL-3", kind="anndata", reader="h5ad", organism="Homo sapiens",
        description="scGen's validation split of the Kang PBMC data: 1,975 cells x 6,998 genes, "
                    "log-normalised; condition and 7 cell types.",
        chapters=("06", "11", "14"),
        citation="Kang HM, et al. Nat Biotechnol 36:89-94 (2018); split from Lotfollahi M, Wolf FA, "
                 "Theis FJ. scGen predicts single-cell perturbation responses. Nat Methods 16:715-721 (2019).",
        packaged_by="scGen, theislab/scgen",
        meta={"tissue": "peripheral blood mononuclear cells", "protocol": "10x Genomics Chromium 3'",
              "geo": "GSE96583", "batch_key": "condition"},
    ))
    url, src = _gh("altoslabs/perturbench", "d357dfae3b50968e800e9f5f273ff145080ae67c",
                   "src/perturbench/data/resources/devel.h5ad")
    out.append(DatasetEntry(
        name="perturbench_devel", file_name="perturbench_devel.h5ad", url=url, source=src,
        sha256="220998f5630c813228c8661c86dd52244b9ac87127511289af90e0d900d8429b",
        license="BSD-3-Clause", kind="anndata", reader="h5ad", organism="Homo sapiens",
        description="Genetic perturbations, 5,961 cells x 500 HVGs, log-normalised: Norman 2019 "
                    "K562 CRISPRa singles and doubles plus McFaline-Figueroa CRISPRi in 3 glioma lines.",
        chapters=("06", "11"),
        citation="Norman TM, Horlbeck MA, Replogle JM, et al. Exploring genetic interaction "
                 "manifolds constructed from rich single-cell phenotypes. Science 365:786-793 (2019); "
                 "McFaline-Figueroa JL, et al. (CRISPRi in glioblastoma lines, sci-Plex-GxE).",
        packaged_by="PerturBench (Wu Y, et al. arXiv:2408.10609, 2024), altoslabs/perturbench",
        meta={"tissue": "cell lines (K562; A172, T98G, U87MG)", "protocol": "Perturb-seq (10x) and sci-Plex-GxE",
              "batch_key": "dataset"},
    ))
    # The gene tables come straight from CellTypist's repository at pinned commits (no wheel is
    # downloaded for them): the same bytes as in the celltypist 1.7.1 wheel and the mirror.
    tables = [
        ("gencode_v44_id2name", "GENCODEv44_Gene_id2name.csv", "3fb44c26a7c21f626b7c6f484d21ed99561bcf90",
         "0a8d9b07cf63f9ef70e65f3c7afc9d2092a7d9890281172df770003827912f53", "Homo sapiens",
         "62,754 human Ensembl gene IDs -> gene symbols (GENCODE v44), CSV without header.",
         "GENCODE v44 (Frankish A, et al. GENCODE: reference annotation for the human and mouse "
         "genomes in 2023. Nucleic Acids Res 51:D942-D949, 2023)."),
        ("human2mouse_orthologs", "Ensembl105_Human2Mouse_Genes.csv", "c7a01f07f324518f22a71e712c545756ab4cbc9d",
         "4a174c83cfa70aad7c470d8e453fda94d8fb5d70f8a2f0ae196d54c9e31369f1", "Homo sapiens / Mus musculus",
         "Human -> mouse gene-symbol orthologs from Ensembl 105 (about 24,857 non-empty pairs), CSV without header.",
         "Ensembl release 105 (Cunningham F, et al. Ensembl 2022. Nucleic Acids Res 50:D988-D995, 2022)."),
    ]
    for name, fname, commit, sha, org, desc, cite in tables:
        url, src = _gh("Teichlab/celltypist", commit, f"celltypist/data/samples/{fname}")
        out.append(DatasetEntry(
            name=name, file_name=fname, url=url, source=src,
            sha256=sha, license="MIT", kind="table", reader="table", organism=org, description=desc,
            chapters=("04",), citation=cite,
            packaged_by="CellTypist (Dominguez Conde C, et al. Science 376:eabl5197, 2022), Teichlab/celltypist",
        ))
    tfs = [
        ("tfs_human", "allTFs_hg38.txt", "moscot/utils/_data/allTFs_hg38.txt",
         "3953034f84112c60d3d8ef15b0e0c8ac5fce0b40d2c7c0824c2945c70cee2523", "Homo sapiens",
         "1,892 human transcription factors (cisTarget list), one symbol per line."),
        ("tfs_mouse", "allTFs_mm.txt", "moscot/utils/_data/allTFs_mm.txt",
         "17a95e142147fb7dc063d7b9e84262746b0b64f622793b3cc5df0eddf2f1194c", "Mus musculus",
         "1,860 mouse transcription factors (cisTarget list), one symbol per line."),
    ]
    for name, fname, member, sha, org, desc in tfs:
        out.append(DatasetEntry(
            name=name, file_name=fname, url=_MOSCOT_WHL, source=f"moscot 0.5.2 wheel : {member}",
            sha256=sha, license="BSD-3-Clause", kind="table", reader="table", organism=org, description=desc,
            chapters=("03", "13"),
            citation="Aibar S, et al. SCENIC: single-cell regulatory network inference and clustering. "
                     "Nat Methods 14:1083-1086 (2017) (cisTarget resources).",
            packaged_by="moscot (Klein D, Palla G, Lange M, et al. Nature 638:1065-1075, 2025), PyPI moscot 0.5.2",
            wheel_member=member, wheel_sha256=_MOSCOT_WHL_SHA,
        ))
    return out


#: name -> entry, in the order of the mirror's manifest.
REGISTRY: dict[str, DatasetEntry] = {e.name: e for e in _entries()}


class UnknownDatasetError(KeyError, ValueError):
    """Raised for a name that is not in the registry; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def available(kind: str | None = None) -> list[str]:
    """Names of all registered datasets (optionally only ``kind="anndata"`` or ``"table"``).

    Chapter 01 lists them; ``load`` accepts the AnnData ones and ``fetch`` accepts all.
    """
    return [n for n, e in REGISTRY.items() if kind is None or e.kind == kind]


def get_entry(name: str) -> DatasetEntry:
    """Return the registry entry for ``name`` or raise :class:`UnknownDatasetError`."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        pass
    close = difflib.get_close_matches(str(name), list(REGISTRY), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownDatasetError(
        f"Unknown dataset {name!r}.{hint} Registered names: {', '.join(REGISTRY)} "
        "(see tflib.datasets.available())."
    )


def card_path(name: str) -> Path:
    """Path of the dataset card ``data/<name>.md``."""
    return get_entry(name).card


def info(name: str) -> str:
    """Human-readable description of a dataset: its card if present, else the registry entry.

    The returned text always starts with the registry facts (file, source, URL, SHA-256,
    licence) so it is useful even when the course's ``data/`` folder is not installed.
    """
    e = get_entry(name)
    lines = [
        f"{e.name}: {e.description}",
        f"  file     : {e.file_name}",
        f"  source   : {e.source}",
        f"  url      : {e.url}",
        f"  sha256   : {e.sha256}",
        f"  licence  : {e.license}",
        f"  organism : {e.organism}",
        f"  chapters : {', '.join(e.chapters)}",
        f"  citation : {e.citation}",
        f"  packaged : {e.packaged_by}",
    ]
    if e.wheel_member:
        lines.insert(4, f"  member   : {e.wheel_member} (wheel sha256 {e.wheel_sha256})")
    text = "\n".join(lines)
    if e.card.is_file():
        text += "\n\n" + e.card.read_text(encoding="utf-8")
    return text
