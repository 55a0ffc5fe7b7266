// The slide page at /slide/{study}/{series}: the series' whole-slide
// pyramid in dicom-microscopy-viewer, which reads only the tiles
// (/frames/) of the region in view through dicomweb-client, decodes them in
// a worker and applies the optical path's ICC profile; beside it, the label
// and the overview rendered by the server to the size shown.
'use strict';

const $ = (id) => document.getElementById(id);
const [, , study, series] = location.pathname.split('/').map(decodeURIComponent);
const first = (meta, tag) => ((meta && meta[tag] && meta[tag].Value) || [])[0];

function problem(message) {
  $('problem').textContent = message;
  $('problem').hidden = false;
}

function rendered(meta, img, figure) {
  const sop = first(meta, '00080018');
  img.src = `/dicom-web/studies/${study}/series/${series}/instances/${sop}/rendered?viewport=300,300`;
  figure.hidden = false;
}

async function main() {
  if (!window.DICOMwebClient || !window.dicomMicroscopyViewer) {
    problem('The slide viewer is not installed: run scripts/install-viewer.');
    return;
  }
  const client = new DICOMwebClient.api.DICOMwebClient({ url: `${location.origin}/dicom-web` });
  let metadata;
  try {
    metadata = await client.retrieveSeriesMetadata({ studyInstanceUID: study, seriesInstanceUID: series });
  } catch (e) {
    problem(e && e.status === 404 ? 'This series does not exist, or is not yours to see.' : String(e.message || e));
    return;
  }
  const volume = [];
  for (const meta of metadata) {
    const kind = ((meta['00080008'] || {}).Value || [])[2];
    if (kind === 'LABEL') rendered(meta, $('label'), $('label-figure'));
    else if (kind === 'OVERVIEW') rendered(meta, $('overview'), $('overview-figure'));
    else if (first(meta, '00080016') === '1.2.840.10008.5.1.4.1.1.77.1.6') {
      volume.push(new dicomMicroscopyViewer.metadata.VLWholeSlideMicroscopyImage({ metadata: meta }));
    }
  }
  if (!volume.length) {
    problem('This series holds no whole-slide image.');
    return;
  }
  const base = volume.reduce((a, b) => (a.TotalPixelMatrixColumns >= b.TotalPixelMatrixColumns ? a : b));
  const name = String((first(base, '00100010') || {}).Alphabetic || '').replace(/\^+/g, ' ');
  $('slide-title').textContent = [name, base.ContainerIdentifier, `${volume.length} levels`].filter(Boolean).join(' · ');
  const spacing = base.SharedFunctionalGroupsSequence?.[0]?.PixelMeasuresSequence?.[0]?.PixelSpacing;
  if (spacing) $('slide-scale').textContent = `${(spacing[0] * 1000).toFixed(2)} µm/pixel at full resolution`;
  const viewer = new dicomMicroscopyViewer.viewer.VolumeImageViewer({
    client,
    metadata: volume,
    controls: ['zoom', 'scale', 'position'],
    errorInterceptor: (error) => problem(String(error.message || error)),
  });
  viewer.render({ container: $('slide') });
  // For scripted checks and the browser console.
  window.slideViewer = viewer;
  document.body.dataset.ready = 'true';
}

main().catch((e) => problem(String(e.message || e)));
