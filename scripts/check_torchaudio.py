"""Keep a working environment when PyPI's torchaudio does not match the installed torch.

fairseq's packaging pulls the newest torchaudio, a CUDA build. Beside a CPU torch it fails to import
(``libc10_cuda.so``), and that failure also breaks ``transformers`` model imports. fairseq's wav2vec2
fine-tuning does not need torchaudio (audio is read with soundfile), so a torchaudio that cannot be imported is
removed from this virtual environment. A torchaudio that imports (a GPU machine) is left untouched.
"""

import importlib.util
import subprocess
import sys


def main() -> int:
    if importlib.util.find_spec("torchaudio") is None:
        return 0
    probe = subprocess.run([sys.executable, "-c", "import torchaudio"], capture_output=True, text=True)
    if probe.returncode == 0:
        print("torchaudio imports fine: kept")
        return 0
    last = (probe.stderr.strip().splitlines() or ["?"])[-1]
    print(f"torchaudio is installed but does not import ({last}); removing it from this environment")
    return subprocess.call([sys.executable, "-m", "pip", "uninstall", "-y", "-q", "torchaudio"])


if __name__ == "__main__":
    sys.exit(main())
